"""Who is acting, and what they may do: identities from sign-in, roles from configuration.

Sign-in is Streamlit's own ``st.login`` (OIDC), configured by an ``[auth]`` section in
``.streamlit/secrets.toml``. Roles come from the ``[tally.roles]`` table of the same file, each
role a list of rules over the ID token's claims:

```toml
[tally.roles]
admin = ["alice@example.com"]
reviewer = ["@example.com", "claim:groups=reviewers"]
runner = ["claim:groups=engineering"]
viewer = ["*"]
```

A rule is an e-mail address, ``@domain`` (any address at it), ``claim:NAME=VALUE`` (the claim
equals VALUE, or is a list holding it) or ``*`` (anyone signed in). E-mails count only when the
provider did not say they are unverified. A signed-in identity no rule names has no role at
all: it may not even browse.

**viewer** browses, **runner** may spend (votes, batches, curve draws, sweeps), **reviewer**
resolves reviews, **admin** may do everything (providers, ceilings, the roles themselves and
the review of a blind double review that disagreed). Any role implies viewer.

Without an ``[auth]`` section Tally is single-user and local: the one person at the machine is
every role, and the dashboard binds only to loopback (``binding_refusal``). Every check lives
here, in ``Identity.require``, called by the store and the runner; pages only show the outcome.
"""

from __future__ import annotations

import getpass
import ipaddress
import json
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.errors import ConfigError, ForbiddenError, NotSignedInError

ROOT = Path(__file__).resolve().parent.parent
LOCAL_ISSUER = "local"
SECRETS_VARIABLE = "TALLY_SECRETS"
"""A secrets file to use instead of Streamlit's own places (the e2e tests set it)."""


class Role(StrEnum):
    VIEWER = "viewer"
    RUNNER = "runner"
    REVIEWER = "reviewer"
    ADMIN = "admin"


ACTIONS = {
    Role.VIEWER: "browse Tally",
    Role.RUNNER: "spend (start votes, batches, curve draws or sweeps)",
    Role.REVIEWER: "resolve reviews",
    Role.ADMIN: "change providers, ceilings or roles",
}


@dataclass(frozen=True)
class Identity:
    """Who acts: the ID token's issuer and subject (together unique), e-mail and name, and the
    roles the configuration gives them. ``signed_in`` is False for the local single user and
    for an anonymous visitor (who has no roles)."""

    issuer: str
    subject: str
    email: str | None = None
    name: str | None = None
    roles: frozenset[Role] = field(default_factory=frozenset)
    signed_in: bool = False

    @property
    def known(self) -> bool:
        """Someone rather than an anonymous visitor."""
        return bool(self.issuer and self.subject)

    @property
    def key(self) -> str:
        return f"{self.issuer}|{self.subject}"

    @property
    def display(self) -> str:
        return self.name or self.email or self.subject or "anonymous"

    def has(self, role: Role) -> bool:
        if Role.ADMIN in self.roles or role in self.roles:
            return True
        return role == Role.VIEWER and bool(self.roles)

    def require(self, role: Role) -> None:
        """Refuse, with one line saying why, unless this identity holds ``role``."""
        if self.has(role):
            return
        if not self.known:
            raise NotSignedInError(f"sign in to {ACTIONS[role]}")
        held = ", ".join(sorted(self.roles)) or "no role"
        raise ForbiddenError(
            f"{self.display} may not {ACTIONS[role]}: that needs the {role} role (held: {held})"
        )

    def record(self) -> dict[str, str | None]:
        """What the store keeps of who acted (never a token)."""
        return {"iss": self.issuer, "sub": self.subject, "email": self.email, "name": self.name}

    def to_json(self) -> str:
        return json.dumps(self.record(), ensure_ascii=False, separators=(",", ":"))


ANONYMOUS = Identity(issuer="", subject="")


def local_identity(name: str | None = None) -> Identity:
    """The single local user when sign-in is off: every role, named by the OS account, or by
    the name typed on the Review page (allowed only while sign-in is off)."""
    typed = " ".join((name or "").split()) or None
    return Identity(
        issuer=LOCAL_ISSUER,
        subject=typed or _os_user(),
        name=typed,
        roles=frozenset(Role),
        signed_in=False,
    )


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "local"


LOCAL = local_identity()


# -- role rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One entry of a role's list in ``[tally.roles]``."""

    text: str

    def matches(self, claims: Mapping[str, Any]) -> bool:
        if self.text == "*":
            return True
        if self.text.startswith("claim:"):
            name, _, value = self.text[len("claim:") :].partition("=")
            held = claims.get(name)
            if isinstance(held, list):
                return value in [str(v) for v in held]
            return held is not None and str(held) == value
        email = verified_email(claims)
        if email is None:
            return False
        if self.text.startswith("@"):
            return email.endswith(self.text.lower())
        return email == self.text.lower()


def parse_rule(text: object, role: str) -> Rule:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"[tally.roles] {role}: every rule is a non-empty string, not {text!r}")
    rule = text.strip()
    if rule == "*" or (rule.startswith("@") and len(rule) > 1):
        return Rule(rule)
    if rule.startswith("claim:"):
        name, eq, value = rule[len("claim:") :].partition("=")
        if not name or not eq or not value:
            raise ConfigError(f"[tally.roles] {role}: {rule!r} is not claim:NAME=VALUE")
        return Rule(rule)
    local, at, domain = rule.partition("@")
    if not local or not at or "." not in domain:
        raise ConfigError(
            f"[tally.roles] {role}: {rule!r} is not an e-mail, @domain, claim:NAME=VALUE or *"
        )
    return Rule(rule.lower())


def verified_email(claims: Mapping[str, Any]) -> str | None:
    """The token's e-mail, lower-cased, unless the provider says it is unverified."""
    email = claims.get("email")
    if not isinstance(email, str) or not email.strip():
        return None
    if claims.get("email_verified") is False:
        return None
    return email.strip().lower()


# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthSettings:
    """Whether sign-in is configured, and the role rules."""

    enabled: bool = False
    rules: tuple[tuple[Role, Rule], ...] = ()

    @classmethod
    def from_secrets(cls, secrets: Mapping[str, Any] | None) -> AuthSettings:
        """Read ``[auth]`` and ``[tally.roles]`` from Streamlit's secrets (as a plain dict)."""
        secrets = secrets or {}
        auth = secrets.get("auth")
        enabled = isinstance(auth, Mapping) and bool(auth)
        tally = secrets.get("tally") or {}
        roles = tally.get("roles") if isinstance(tally, Mapping) else None
        if roles is None:
            return cls(enabled=enabled)
        if not isinstance(roles, Mapping):
            raise ConfigError("[tally.roles] must be a table of role = [rules]")
        rules: list[tuple[Role, Rule]] = []
        for name, entries in roles.items():
            try:
                role = Role(name)
            except ValueError:
                allowed = ", ".join(r.value for r in Role)
                raise ConfigError(f"[tally.roles] {name!r} is not a role: use {allowed}") from None
            if isinstance(entries, str) or not isinstance(entries, Sequence):
                raise ConfigError(f"[tally.roles] {name} must be a list, like [{entries!r}]")
            rules += [(role, parse_rule(entry, name)) for entry in entries]
        return cls(enabled=enabled, rules=tuple(rules))

    def roles_of(self, claims: Mapping[str, Any]) -> frozenset[Role]:
        return frozenset(role for role, rule in self.rules if rule.matches(claims))

    def identity(
        self, user: Mapping[str, Any] | None, *, typed_name: str | None = None
    ) -> Identity:
        """Who the session is: the local user when sign-in is off, else the signed-in claims
        (``st.user``) with their roles, else anonymous. A typed name counts only when sign-in
        is off."""
        if not self.enabled:
            return local_identity(typed_name)
        if not user or user.get("is_logged_in") is not True:
            return ANONYMOUS
        issuer, subject = user.get("iss"), user.get("sub")
        if not isinstance(issuer, str) or not issuer or not isinstance(subject, str) or not subject:
            return ANONYMOUS  # a login without the two claims that say who it is
        name = next(
            (
                str(user[c]).strip()
                for c in ("name", "preferred_username")
                if isinstance(user.get(c), str) and str(user[c]).strip()
            ),
            None,
        )
        email = user.get("email") if isinstance(user.get("email"), str) else None
        return Identity(
            issuer=issuer,
            subject=subject,
            email=email,
            name=name,
            roles=self.roles_of(user),
            signed_in=True,
        )


def secrets_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """The secrets files the dashboard reads, later ones winning: ``TALLY_SECRETS`` alone when
    set, else Streamlit's own two (the user's, then the checkout's). The launcher hands this
    list to Streamlit, so the working directory never changes what is read."""
    env = os.environ if env is None else env
    if env.get(SECRETS_VARIABLE):
        return [Path(env[SECRETS_VARIABLE])]
    return [Path.home() / ".streamlit" / "secrets.toml", ROOT / ".streamlit" / "secrets.toml"]


def read_secrets(paths: Iterable[Path]) -> dict[str, Any]:
    """The files merged as Streamlit merges them (top-level sections, later files win)."""
    merged: dict[str, Any] = {}
    for path in paths:
        if not path.is_file():
            continue
        try:
            merged.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read {path}: {err}") from None
    return merged


def load_settings(env: Mapping[str, str] | None = None) -> AuthSettings:
    return AuthSettings.from_secrets(read_secrets(secrets_files(env)))


# -- binding -----------------------------------------------------------------------------------


def is_loopback(host: str | None) -> bool:
    if not host:
        return False  # Streamlit's default, no address, listens on every interface
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def binding_refusal(host: str | None, settings: AuthSettings) -> str | None:
    """Why the dashboard may not listen on ``host`` (None when it may): off loopback it would
    serve anyone who reaches the port, so that needs sign-in."""
    if is_loopback(host) or settings.enabled:
        return None
    where = host or "every interface"
    return (
        f"refusing to listen on {where}: sign-in is not configured ([auth] in "
        ".streamlit/secrets.toml), and without it Tally is single-user on 127.0.0.1"
    )
