"""tally.toml loading: defaults, every kind of mistake as one line naming file and field, and
saving a measured ceiling without disturbing the rest of the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import (
    BUILTIN_PROVIDERS,
    SIM_IN_PROCESS_URL,
    Defaults,
    Settings,
    load_config,
    load_settings,
    parse_config,
    save_provider_concurrency,
)
from core.errors import ConfigError

GOOD = """
[providers.local]
kind = "openai"                 # OpenAI-compatible chat completions
base_url = "http://127.0.0.1:8001/v1/"
api_key_env = "LOCAL_API_KEY"
max_concurrency = 8
models = ["my-model"]
headers = { "X-Team" = "votes" }

[prices."openai:gpt-4.1-mini"]
input_per_mtok = 0.4
output_per_mtok = 1.6

[defaults]
concurrency = 16
n = 7
"""


def write(tmp_path: Path, text: str, name: str = "tally.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TALLY_CONFIG", raising=False)
    config = load_config()
    assert config.providers == {}
    assert config.path is None
    assert config.defaults == Defaults()
    assert (config.defaults.concurrency, config.defaults.n) == (8, None)


def test_full_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    config = load_config(path)
    local = config.providers["local"]
    assert local.kind == "openai"
    assert local.base_url == "http://127.0.0.1:8001/v1"  # trailing slash dropped
    assert local.api_key_env == "LOCAL_API_KEY"
    assert local.models == ["my-model"]
    assert local.headers == {"X-Team": "votes"}
    assert config.prices["openai:gpt-4.1-mini"].output_per_mtok == 1.6
    assert config.defaults.concurrency == 16
    assert config.defaults.n == 7
    assert config.path == path


def test_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("TALLY_CONFIG", str(path))
    assert load_config().path == path
    assert Settings().config == path


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("TALLY_SIM_URL", "http://127.0.0.1:8001/v1")
    monkeypatch.setenv("TALLY_CONFIG", "")
    monkeypatch.setenv("TALLY_SIM_SEED", "42")
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0")
    settings = Settings()
    assert (settings.sim_seed, settings.sim_time_scale) == (42, 0.0)
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.sim_url == "http://127.0.0.1:8001/v1"
    assert settings.config is None


def test_bad_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_TRUST_ENV", "perhaps")
    with pytest.raises(ConfigError, match=r"^TALLY_TRUST_ENV: must be true or false$"):
        load_settings()


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=r"nowhere\.toml: file not found$"):
        load_config(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "tally.toml"
    path.write_bytes(b"\xff\xfe[providers]")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[providers.local\nkind = 1", "not valid TOML: "),
        (
            '[providers.local]\nkind = "openai"\nbase_url = "http://x"\nmax_concurrency = "lots"',
            "providers.local.max_concurrency: must be an integer",
        ),
        (
            '[providers.local]\nkind = "openai"\nbase_url = "http://x/v1"\nmax_concurrency = 0',
            "providers.local.max_concurrency: must be at least 1",
        ),
        (
            '[providers.local]\nkind = "gemini"\nbase_url = "http://x/v1"',
            "providers.local.kind: must be one of 'openai' or 'anthropic'",
        ),
        ('[providers.local]\nbase_url = "http://x/v1"', "providers.local.kind: is required"),
        (
            '[providers.local]\nkind = "openai"\nbase_url = "http://x/v1"\ncolour = "red"',
            "providers.local.colour: unknown key",
        ),
        (
            '[providers.local]\nkind = "openai"\nbase_url = "127.0.0.1:8001"',
            "providers.local.base_url: must start with http:// or https://",
        ),
        (
            '[providers.local]\nkind = "openai"\nbase_url = "http://x"\nstream = "yes"',
            "providers.local.stream: must be true or false",
        ),
        ("providers = 3", "providers: must be a table"),
        (
            '[providers."a:b"]\nkind = "openai"\nbase_url = "http://x"',
            'providers."a:b": a provider name is letters, digits',
        ),
        ("verbose = true", "verbose: unknown key"),
        ("[defaults]\nn = 100", "defaults.n: must be at most 64"),
        ("[defaults]\ncall_timeout_s = 0", "defaults.call_timeout_s: must be more than 0"),
        (
            '[prices."openai:gpt-x"]\ninput_per_mtok = "cheap"\noutput_per_mtok = 1',
            'prices."openai:gpt-x".input_per_mtok: must be a number',
        ),
        (
            '[prices."openai:gpt-x"]\ninput_per_mtok = 1',
            'prices."openai:gpt-x".output_per_mtok: is required',
        ),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text).startswith(expected)


def test_several_errors_say_how_many_more(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[prices.x]\ninput_per_mtok = "a"\noutput_per_mtok = "b"')
    assert message == "prices.x.input_per_mtok: must be a number (and 1 more)"


def test_literal_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    secret = "sk-live-0123456789abcdef"
    message = error_of(
        tmp_path, f'[providers.local]\nkind = "openai"\nbase_url = "http://x"\napi_key = "{secret}"'
    )
    assert message.startswith("providers.local.api_key: keys never live in files")
    assert "api_key_env" in message
    assert secret not in message


def test_key_in_place_of_variable_name_is_not_echoed(tmp_path: Path) -> None:
    secret = "sk-proj-abc123-def456"
    message = error_of(
        tmp_path,
        f'[providers.local]\nkind = "openai"\nbase_url = "http://x"\napi_key_env = "{secret}"',
    )
    assert message.startswith("providers.local.api_key_env: must be the NAME of an environment")
    assert secret not in message


def test_authorization_header_is_refused(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        '[providers.local]\nkind = "openai"\nbase_url = "http://x"\n'
        'headers = { Authorization = "Bearer sk-abc" }',
    )
    assert message.startswith("providers.local.headers: header 'Authorization'")
    assert "sk-abc" not in message


def test_builtin_override_sets_only_what_it_names() -> None:
    config = parse_config("[providers.ollama]\nmax_concurrency = 2\n")
    ollama = config.providers["ollama"]
    assert ollama.max_concurrency == 2
    assert ollama.base_url == BUILTIN_PROVIDERS["ollama"].base_url
    assert ollama.supports_n is False
    assert BUILTIN_PROVIDERS["sim"].base_url == SIM_IN_PROCESS_URL


# --- saving a measured ceiling --------------------------------------------------------------


def test_save_replaces_only_that_key(tmp_path: Path) -> None:
    other = '[providers.other]\nkind = "openai"\nbase_url = "http://y"\nmax_concurrency = 3\n'
    text = GOOD + "\n" + other
    path = write(tmp_path, text)
    save_provider_concurrency(path, "local", 12)
    after = path.read_text(encoding="utf-8")
    assert after == text.replace("max_concurrency = 8\n", "max_concurrency = 12\n", 1)
    config = load_config(path)
    assert config.providers["local"].max_concurrency == 12
    assert config.providers["other"].max_concurrency == 3


def test_save_keeps_a_trailing_comment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers."my.local"]\nkind = "openai"\nbase_url = "http://x"\n'
        "max_concurrency = 4   # measured\n",
    )
    save_provider_concurrency(path, "my.local", 6)
    assert "max_concurrency = 6   # measured\n" in path.read_text(encoding="utf-8")
    assert load_config(path).providers["my.local"].max_concurrency == 6


def test_save_adds_the_key_inside_its_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers.local]\nkind = "openai"\nbase_url = "http://x"\n\n[defaults]\nn = 3\n',
    )
    save_provider_concurrency(path, "local", 5)
    config = load_config(path)
    assert config.providers["local"].max_concurrency == 5
    assert config.defaults.n == 3


def test_save_adds_a_table_for_a_builtin(tmp_path: Path) -> None:
    path = write(tmp_path, "[defaults]\nn = 3\n")
    save_provider_concurrency(path, "ollama", 3)
    config = load_config(path)
    assert config.providers["ollama"].max_concurrency == 3
    assert config.defaults.n == 3


def test_save_creates_a_missing_file_for_a_builtin(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "tally.toml"
    save_provider_concurrency(path, "sim", 24)
    assert load_config(path).providers["sim"].max_concurrency == 24


def test_save_refuses_an_unknown_provider(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"no \[providers.nope\] table"):
        save_provider_concurrency(path, "nope", 4)
    assert path.read_text(encoding="utf-8") == GOOD


def test_save_refuses_a_layout_it_cannot_edit(tmp_path: Path) -> None:
    text = '[providers]\nlocal = { kind = "openai", base_url = "http://x", max_concurrency = 2 }\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="set it by hand"):
        save_provider_concurrency(path, "local", 4)
    assert path.read_text(encoding="utf-8") == text


def test_save_refuses_a_bad_value(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="at least 1"):
        save_provider_concurrency(path, "local", 0)


def test_attempt_timeout_is_its_own_setting(tmp_path: Path) -> None:
    assert Defaults().attempt_timeout_s is None  # unset: what remains of the call's deadline
    path = write(tmp_path, "[defaults]\ncall_timeout_s = 90\nattempt_timeout_s = 20\n")
    defaults = load_config(path).defaults
    assert (defaults.call_timeout_s, defaults.attempt_timeout_s) == (90, 20)
    assert "attempt_timeout_s" in error_of(tmp_path, "[defaults]\nattempt_timeout_s = 0\n")
