"""Configuration: ``tally.toml`` for providers, prices and defaults; ``TALLY_*`` variables for
where things are. Keys never live here: a provider names the variable that holds its key.

Every problem with a file becomes one ``ConfigError`` line that names the file and the field,
because the CLI prints it as is and exits 2.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError
from core.panel import MAX_N

SIM_IN_PROCESS_URL = "http://sim.invalid/v1"
"""Base URL of the simulated panel when it runs inside the process (no server, no socket):
``core.http.build_client`` mounts the sim's ASGI app on this host. ``.invalid`` can never
resolve, so a request that misses the mount fails loudly instead of leaving the machine."""

MAX_CONCURRENCY = 4096
"""The highest ceiling anywhere (global or per provider): beyond it a number is a typo, and
the HTTP pool would hold that many sockets."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Field names that would put a secret in the file. Refused with a pointer to api_key_env.
_SECRET_FIELDS = ("api_key", "key", "token", "secret", "password", "authorization")


class Settings(BaseSettings):
    """Where things are, from the environment (``TALLY_DATABASE_URL``, ``TALLY_CONFIG``, ...)."""

    model_config = SettingsConfigDict(env_prefix="TALLY_", extra="ignore")

    database_url: str = "sqlite:///data/tally.db"
    config: Path | None = None
    sim_url: str | None = None
    """Base URL of a running sim server (``http://127.0.0.1:8001/v1``); unset: the sim runs
    in-process."""
    sim_seed: int = 0
    """Seed of the in-process sim: the same seed gives the same simulated answers."""
    sim_time_scale: float = Field(default=1.0, ge=0)
    """Multiplies the in-process sim's latencies (0: answer at once, for tests)."""
    batch_lease_s: float = Field(default=30.0, gt=0)
    """How long a batch stays claimed by its process without a heartbeat: a resume elsewhere
    is refused while the lease lasts (the heartbeat renews it every third of this)."""
    queue_heartbeat_s: float = Field(default=10.0, gt=0)
    """How old a queue worker's heartbeat on a part of a batch may get before another worker
    takes the part over (it beats every half of this)."""
    shared_limits: bool = False
    """Keep the global and per-provider ceilings and the rate-limit pace in the PostgreSQL
    store, shared by every process that has this on (``core.limits``): what a dashboard runs
    on a team's store then counts against the same ceilings as its workers (which always
    share them)."""
    trust_env: bool = True
    """Honour ``HTTP(S)_PROXY``/``NO_PROXY``/``SSL_CERT_FILE`` in the HTTP client. Off
    (``TALLY_TRUST_ENV=0``) when a proxy variable would catch loopback traffic to a sim server."""

    @field_validator("config", "sim_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class _Strict(BaseModel):
    """TOML has real types: a string where a number or boolean belongs is a mistake to report,
    not to coerce (``stream = "no"`` would otherwise read as false... or true)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ProviderConfig(_Strict):
    """One ``[providers.NAME]`` table."""

    kind: Literal["openai", "anthropic"]
    base_url: str
    api_key_env: str | None = None  # the NAME of the variable that holds the key
    max_concurrency: int = Field(default=8, ge=1, le=MAX_CONCURRENCY)
    models: list[str] = Field(default_factory=list)  # known models, offered by the UI
    supports_n: bool = True  # OpenAI-compatible ``n``: several samples in one request
    stream: bool = False
    timeout_s: float = Field(default=60.0, gt=0)  # read timeout: longest silence in a reply
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_literal_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for name in _SECRET_FIELDS:
                if name in data:
                    raise _FieldProblem(
                        name,
                        "keys never live in files: put the key in an environment variable "
                        "and name that variable with api_key_env",
                    )
        return data

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # Never echo the value: if it is not a variable name it may well be the key itself.
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(
                "must be the NAME of an environment variable (like OPENAI_API_KEY), "
                "not the key itself"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in ("authorization", "x-api-key", "api-key"):
                raise ValueError(
                    f"header {name!r} would put a key in the file: use api_key_env instead"
                )
        return value


class PriceOverride(_Strict):
    """USD per million tokens, for a model genai-prices does not know or prices differently."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class Defaults(_Strict):
    concurrency: int = Field(default=8, ge=1, le=MAX_CONCURRENCY)  # the handbook's 8
    call_timeout_s: float = Field(default=60.0, gt=0)  # the whole call: retries and waits included
    # One attempt; unset, an attempt may use what remains of the call's deadline. A limit here
    # retries a stalled connection sooner, but a slow model cut by it is paid for twice.
    attempt_timeout_s: float | None = Field(default=None, gt=0)
    max_attempts: int = Field(default=4, ge=1, le=20)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    """N of a run that names none (``-n``, the library's ``n``); unset: one slot per model."""


class TallyConfig(_Strict):
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    prices: dict[str, PriceOverride] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    path: Path | None = None  # where it was loaded from; None: built-in defaults

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, value: dict[str, ProviderConfig]) -> dict[str, ProviderConfig]:
        for name in value:
            if not _PROVIDER_NAME.match(name):
                raise _FieldProblem(
                    name,
                    "a provider name is letters, digits, '.', '_' or '-' "
                    "(models are named provider:model)",
                )
        return value


BUILTIN_PROVIDERS: dict[str, ProviderConfig] = {
    "openai": ProviderConfig(
        kind="openai",
        base_url="https://api.openai.com/v1",
        api_key_env="OPENAI_API_KEY",
        models=["gpt-4.1-mini", "gpt-4.1", "gpt-4o-mini"],
    ),
    "anthropic": ProviderConfig(
        kind="anthropic",
        base_url="https://api.anthropic.com/v1",
        api_key_env="ANTHROPIC_API_KEY",
        supports_n=False,
        models=["claude-haiku-4-5", "claude-sonnet-4-5"],
    ),
    # Ollama's compatible endpoint ignores ``n``: separate calls from the start.
    "ollama": ProviderConfig(
        kind="openai", base_url="http://127.0.0.1:11434/v1", supports_n=False, timeout_s=300.0
    ),
    "sim": ProviderConfig(kind="openai", base_url=SIM_IN_PROCESS_URL),
}
"""Providers that exist without configuration. A ``[providers.NAME]`` table with one of these
names overrides only the fields it sets (``[providers.ollama] max_concurrency = 2`` is enough)."""


class _FieldProblem(ValueError):
    """Raised inside validation to point at a sub-field pydantic cannot name by itself."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def load_settings() -> Settings:
    """``Settings()`` with a bad variable reported as one ``ConfigError`` line."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        where, message = _locate(error)
        variable = f"TALLY_{where.upper()}" if where else "TALLY_*"
        raise ConfigError(f"{variable}: {message}") from None


def load_config(path: str | Path | None = None) -> TallyConfig:
    """Load ``path``, else ``$TALLY_CONFIG``, else the built-in defaults (the simulated panel)."""
    if path is None:
        path = load_settings().config
    if path is None:
        return TallyConfig()
    path = Path(path)
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{label}: is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not valid UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    return parse_config(text, label=label, path=path)


def parse_config(text: str, *, label: str = "tally.toml", path: Path | None = None) -> TallyConfig:
    """Validate TOML text; ``label`` names the source in error messages."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {_one_line(str(exc))}") from None
    providers = raw.get("providers")
    if isinstance(providers, dict):
        raw["providers"] = {name: _merge_builtin(name, table) for name, table in providers.items()}
    try:
        return TallyConfig.model_validate({**raw, "path": path})
    except ValidationError as exc:
        raise ConfigError(f"{label}: {_describe(exc)}") from None


def _merge_builtin(name: str, table: Any) -> Any:
    builtin = BUILTIN_PROVIDERS.get(name)
    if builtin is None or not isinstance(table, dict):
        return table
    return {**builtin.model_dump(exclude_defaults=True), **table}


_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "list_type": "must be a list",
    "missing": "is required",
    "extra_forbidden": "unknown key",
}


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    where, message = _locate(first)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def _locate(error: ErrorDetails) -> tuple[str, str]:
    loc = [_quote_key(str(part)) for part in error["loc"]]
    ctx = error.get("ctx") or {}
    problem = ctx.get("error")
    if isinstance(problem, _FieldProblem):
        return ".".join([*loc, _quote_key(problem.field)]), problem.message
    kind = error["type"]
    if kind in _MESSAGES:
        message = _MESSAGES[kind]
    elif kind == "literal_error":
        message = f"must be one of {ctx.get('expected', '')}"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {
            "greater_than_equal": "at least",
            "greater_than": "more than",
            "less_than_equal": "at most",
            "less_than": "less than",
        }
        bound = next(iter(v for k, v in ctx.items() if k in ("ge", "gt", "le", "lt")), "")
        message = f"must be {words[kind]} {bound}"
    elif kind == "value_error" and isinstance(problem, ValueError):
        message = str(problem)
    else:
        message = error["msg"][:1].lower() + error["msg"][1:]
    return ".".join(loc), _one_line(message)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- saving a measured ceiling --------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_TABLE_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")
_KEY_LINE = re.compile(r"^(\s*max_concurrency\s*=\s*)([^#\r\n]*?)(\s*(?:#.*)?)$")


def save_provider_concurrency(path: str | Path, provider: str, value: int) -> None:
    """Set ``max_concurrency`` of ``[providers.NAME]`` in ``path``, leaving every other line,
    comment and blank as it was (a measured ceiling is saved into a file people also edit).

    Adds the key to the table when it is missing, and the table when the provider is a
    built-in one without a table yet. The result is parsed back before it replaces the file;
    a layout this cannot edit (inline tables, dotted keys) is refused, never half-written.
    """
    if value < 1:
        raise ConfigError(f"max_concurrency must be at least 1, got {value}")
    path = Path(path)
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise ConfigError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()
    start = _find_table(lines, provider)
    if start is None:
        if text.strip() and provider in parse_config(text, label=label, path=path).providers:
            raise _cannot_edit(label, provider)
        if provider not in BUILTIN_PROVIDERS:
            raise ConfigError(f"{label}: no [providers.{provider}] table to save into")
        if lines and lines[-1].strip():
            lines.append("")
        lines += [f"[providers.{_quote_key(provider)}]", f"max_concurrency = {value}"]
    else:
        end = start + 1
        while end < len(lines) and not _ANY_HEADER.match(lines[end]):
            end += 1
        for i in range(start + 1, end):
            match = _KEY_LINE.match(lines[i])
            if match:
                lines[i] = f"{match.group(1)}{value}{match.group(3)}"
                break
        else:
            last = start
            for i in range(start + 1, end):
                if lines[i].strip() and not lines[i].lstrip().startswith("#"):
                    last = i
            lines.insert(last + 1, f"max_concurrency = {value}")
    new_text = newline.join(lines) + newline
    config = parse_config(new_text, label=label, path=path)
    saved = config.providers.get(provider)
    if saved is None or saved.max_concurrency != value:
        raise _cannot_edit(label, provider)
    _write_atomically(path, new_text)


def _cannot_edit(label: str, provider: str) -> ConfigError:
    return ConfigError(
        f"{label}: could not save providers.{provider}.max_concurrency "
        "(the table is written in a form this cannot edit): set it by hand"
    )


def _quote_key(name: str) -> str:
    return name if _BARE_KEY.match(name) else '"' + name.replace('"', '\\"') + '"'


def _find_table(lines: list[str], provider: str) -> int | None:
    for i, line in enumerate(lines):
        match = _TABLE_HEADER.match(line)
        if not match:
            continue
        try:
            keys = tomllib.loads(f"[{match.group(1)}]\n")
        except tomllib.TOMLDecodeError:
            continue
        table = keys.get("providers")
        if isinstance(table, dict) and list(table) == [provider] and table[provider] == {}:
            return i
    return None


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
