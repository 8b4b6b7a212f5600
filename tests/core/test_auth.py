"""Identities and roles (``core.auth``): rules over the ID token's claims, what each role may
do, the local single user, and the loopback binding that holds until sign-in is configured."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.auth import (
    ANONYMOUS,
    LOCAL,
    AuthSettings,
    Identity,
    Role,
    binding_refusal,
    is_loopback,
    load_settings,
    local_identity,
    read_secrets,
    secrets_files,
)
from core.cli import app
from core.errors import ConfigError, ForbiddenError, NotSignedInError
from core.launch import dashboard_command

AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "not-a-real-secret-just-for-tests",
    "client_id": "tally",
    "client_secret": "not-a-real-secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}
ROLES = {
    "admin": ["root@example.com"],
    "reviewer": ["@reviewers.example.com", "claim:groups=review"],
    "runner": ["claim:team=eng"],
    "viewer": ["*"],
}
SETTINGS = AuthSettings.from_secrets({"auth": AUTH, "tally": {"roles": ROLES}})


def user(**claims: object) -> dict[str, object]:
    return {"is_logged_in": True, "iss": "https://idp.test", "sub": "s-1", **claims}


def test_roles_come_from_claims_and_emails() -> None:
    assert SETTINGS.enabled
    ana = SETTINGS.identity(user(email="Ana@Reviewers.Example.com", name="Ana"))
    assert ana.signed_in and ana.roles == {Role.REVIEWER, Role.VIEWER}
    assert (ana.issuer, ana.subject, ana.email, ana.display) == (
        "https://idp.test",
        "s-1",
        "Ana@Reviewers.Example.com",
        "Ana",
    )
    assert SETTINGS.identity(user(groups=["x", "review"])).has(Role.REVIEWER)
    assert SETTINGS.identity(user(team="eng")).roles == {Role.RUNNER, Role.VIEWER}
    root = SETTINGS.identity(user(email="root@example.com"))
    assert all(root.has(role) for role in Role)  # admin may do everything
    nobody = SETTINGS.identity(user(email="eve@elsewhere.org"))
    assert nobody.roles == {Role.VIEWER} and not nobody.has(Role.RUNNER)


def test_an_unverified_email_matches_no_rule() -> None:
    forged = SETTINGS.identity(user(email="root@example.com", email_verified=False))
    assert not forged.has(Role.ADMIN) and forged.roles == {Role.VIEWER}


def test_a_signed_in_identity_no_rule_names_may_not_even_browse() -> None:
    strict = AuthSettings.from_secrets({"auth": AUTH, "tally": {"roles": {"admin": ["a@b.co"]}}})
    who = strict.identity(user(email="eve@elsewhere.org"))
    assert who.roles == frozenset()
    with pytest.raises(ForbiddenError, match=r"may not browse Tally: that needs the viewer role"):
        who.require(Role.VIEWER)


def test_require_says_who_and_what_in_one_line() -> None:
    viewer = SETTINGS.identity(user(email="v@elsewhere.org", name="Vi"))
    with pytest.raises(ForbiddenError) as err:
        viewer.require(Role.RUNNER)
    assert str(err.value) == (
        "Vi may not spend (start votes, batches, curve draws or sweeps): that needs the "
        "runner role (held: viewer)"
    )
    with pytest.raises(NotSignedInError, match=r"^sign in to resolve reviews$"):
        ANONYMOUS.require(Role.REVIEWER)
    with pytest.raises(NotSignedInError):
        ANONYMOUS.require(Role.VIEWER)


def test_not_signed_in_is_anonymous_and_a_typed_name_counts_only_without_sign_in() -> None:
    assert SETTINGS.identity(None) == ANONYMOUS
    assert SETTINGS.identity({"is_logged_in": False}) == ANONYMOUS
    assert SETTINGS.identity({"is_logged_in": True, "email": "root@example.com"}) == ANONYMOUS
    assert SETTINGS.identity(None, typed_name="root") == ANONYMOUS
    signed = SETTINGS.identity(user(email="v@x.org", name="Vi"), typed_name="Somebody Else")
    assert signed.display == "Vi"

    off = AuthSettings.from_secrets({})
    assert not off.enabled
    local = off.identity(None, typed_name="  Ana  B ")
    assert local == local_identity("Ana B")
    assert (local.issuer, local.subject, local.display) == ("local", "Ana B", "Ana B")
    assert all(local.has(role) for role in Role) and not local.signed_in
    assert LOCAL.known and LOCAL.issuer == "local"


def test_the_record_keeps_who_never_a_token() -> None:
    who = Identity("https://idp.test", "s-1", "a@b.co", "Ana", frozenset({Role.ADMIN}), True)
    assert who.record() == {
        "iss": "https://idp.test",
        "sub": "s-1",
        "email": "a@b.co",
        "name": "Ana",
    }
    assert who.to_json() == '{"iss":"https://idp.test","sub":"s-1","email":"a@b.co","name":"Ana"}'


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ({"owner": ["a@b.co"]}, "'owner' is not a role: use viewer, runner, reviewer, admin"),
        ({"admin": "a@b.co"}, "admin must be a list"),
        ({"admin": ["claim:groups"]}, "is not claim:NAME=VALUE"),
        ({"admin": ["alice"]}, "is not an e-mail, @domain, claim:NAME=VALUE or *"),
        ({"admin": [""]}, "non-empty string"),
        ("admin", "must be a table"),
    ],
)
def test_bad_role_rules_are_refused_in_one_line(roles: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AuthSettings.from_secrets({"auth": AUTH, "tally": {"roles": roles}})


def test_secrets_files_and_reading(tmp_path: Path) -> None:
    path = tmp_path / "secrets.toml"
    assert secrets_files({"TALLY_SECRETS": str(path)}) == [path]
    defaults = secrets_files({})
    assert defaults[0] == Path.home() / ".streamlit" / "secrets.toml"
    assert defaults[1].parts[-2:] == (".streamlit", "secrets.toml")
    assert defaults[1].parent.parent == Path(__file__).resolve().parents[2]  # not the cwd
    assert read_secrets([path]) == {}  # missing: nothing configured
    path.write_text('[auth]\nclient_id = "x"\n[tally.roles]\nviewer = ["*"]\n')
    assert load_settings({"TALLY_SECRETS": str(path)}).enabled
    path.write_text("[auth\n")
    with pytest.raises(ConfigError, match="cannot read"):
        read_secrets([path])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("", False),
        (None, False),
        ("example.com", False),
    ],
)
def test_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_binding_off_loopback_needs_sign_in() -> None:
    off = AuthSettings()
    assert binding_refusal("127.0.0.1", off) is None
    assert binding_refusal("0.0.0.0", off) == (
        "refusing to listen on 0.0.0.0: sign-in is not configured ([auth] in "
        ".streamlit/secrets.toml), and without it Tally is single-user on 127.0.0.1"
    )
    assert "every interface" in (binding_refusal(None, off) or "")
    assert binding_refusal("0.0.0.0", SETTINGS) is None


def test_the_dashboard_refuses_another_address_without_sign_in(tmp_path: Path) -> None:
    """``tally dashboard --host 0.0.0.0`` exits 2 with one line, before anything starts."""
    env = {"TALLY_SECRETS": str(tmp_path / "none.toml")}
    result = CliRunner().invoke(app, ["dashboard", "--host", "0.0.0.0"], env=env)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0" in lines[0]


def test_the_launcher_gives_streamlit_the_address_secrets_and_xsrf(tmp_path: Path) -> None:
    secrets = tmp_path / "s.toml"
    command = dashboard_command("127.0.0.1", 8600, {"TALLY_SECRETS": str(secrets)})
    pairs = dict(zip(command[5::2], command[6::2], strict=False))
    assert pairs["--server.address"] == "127.0.0.1" and pairs["--server.port"] == "8600"
    assert pairs["--server.enableXsrfProtection"] == "true"
    assert pairs["--secrets.files"] == str(secrets)


def test_the_checked_in_config_keeps_loopback_and_xsrf() -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / ".streamlit" / "config.toml").read_text()
    assert 'address = "127.0.0.1"' in text
    assert "enableXsrfProtection" not in text  # on by default; nothing turns it off
    tracked = subprocess.run(
        ["git", "ls-files", ".streamlit"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert ".streamlit/secrets.toml" not in tracked
