"""Team sign-in end to end: a real OpenID Connect provider (``oidc-provider-mock``) started by
the test, the dashboard with ``st.login`` pointed at it, and headless Chromium signing people in.

Two reviewers in two browsers share the queue: resolving the same run at once, one wins and the
other is told; a claim one takes is shown to the other and holds. A viewer browses the queue
and the Run page but can neither resolve nor spend, URL parameters included. A visitor who is
not signed in sees only the sign-in button.
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from oidc_provider_mock import User, run_server_in_thread
from playwright.sync_api import Browser, Page, expect

from core.store import Store
from tests.e2e.conftest import Dashboard, leaves_loopback, run_dashboard
from tests.e2e.conftest import screenshot as whole_page
from tests.e2e.conftest import wait_idle as settled
from tests.e2e.test_review_batch import choose, click, type_into, wait_idle
from tests.pages.test_review_page import waiting_run

USERS = [
    User(sub="rv-1", claims={"email": "rv@example.com", "name": "Rv", "email_verified": True}),
    User(sub="rw-2", claims={"email": "rw@example.com", "name": "Rw", "email_verified": True}),
    User(sub="vi-3", claims={"email": "vi@example.com", "name": "Vi", "email_verified": True}),
]
COOKIE_SECRET = secrets.token_hex(24)
CLIENT_SECRET = secrets.token_hex(12)
ROLES = """
[tally.roles]
reviewer = ["rv@example.com", "rw@example.com"]
viewer = ["*"]
"""


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """The OpenID provider on a free loopback port, with the three people above."""
    with run_server_in_thread(port=0, user_claims=USERS) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, provider: str) -> Iterator[Dashboard]:
    """The dashboard with sign-in on, its store holding three runs waiting for review."""
    tmp = tmp_path_factory.mktemp("team")
    with Store(f"sqlite:///{tmp / 'e2e.db'}") as store:
        store.ensure_schema()
        for n, run_id in enumerate(("r-race", "r-claim", "r-viewer")):
            store.save_run(waiting_run(run_id, 1000.0 + n), source="ui")
    secrets_file = tmp / "secrets.toml"
    secrets_file.write_text(
        "[auth]\n"
        'redirect_uri = "http://localhost:{port}/oauth2callback"\n'  # Streamlit fills the port
        f'cookie_secret = "{COOKIE_SECRET}"\n'
        'client_id = "tally-e2e"\n'
        f'client_secret = "{CLIENT_SECRET}"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n' + ROLES
    )
    with run_dashboard(tmp, {"TALLY_SECRETS": str(secrets_file)}, host="localhost") as dashboard:
        yield dashboard


@pytest.fixture
def person(browser: Browser) -> Iterator[Callable[[], Page]]:
    """``person()``: a fresh browser (its own cookies); a request off loopback fails the test."""
    contexts = []
    outside: list[str] = []

    def make() -> Page:
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        # the provider's own page asks a CDN for its stylesheet: refused, and not the
        # dashboard's doing; anything else off loopback fails the test
        context.route(leaves_loopback, lambda route: route.abort())
        context.on(
            "request",
            lambda r: (
                outside.append(r.url)
                if leaves_loopback(r.url) and "/oauth2/" not in (r.frame.url if r.frame else "")
                else None
            ),
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()
    assert not outside, f"requests left loopback: {sorted(set(outside))[:5]}"


def screenshot(page: Page, name: str) -> None:
    """The page once every element has been drawn (code blocks load late)."""
    settled(page)
    whole_page(page, name)


def sign_in(page: Page, team: Dashboard, sub: str) -> None:
    """Through the provider's own authorization page, as a person would."""
    page.goto(team.url)
    wait_idle(page)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/oauth2/authorize**")
    page.get_by_role("button", name=sub, exact=True).click()
    page.wait_for_url(f"{team.url}/**")
    wait_idle(page)
    expect(page.get_by_text("Signed in as")).to_be_visible()


def open_review(page: Page, team: Dashboard, query: str = "") -> None:
    page.goto(f"{team.url}/review{query}")
    wait_idle(page)


def fill_decision(page: Page, label: str, reason: str) -> None:
    choose(page, "Final label", label)
    type_into(page, "Reason", reason, area=True)


def resolve(page: Page) -> None:
    click(page, "Resolve")


def test_a_visitor_not_signed_in_sees_only_the_sign_in(
    team: Dashboard, person: Callable[[], Page]
) -> None:
    page = person()
    open_review(page, team, "?role=admin")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("button", name="Sign in")).to_be_visible()
    expect(main.get_by_text("Sign in to use Tally")).to_be_visible()
    assert main.get_by_role("button", name="Resolve").count() == 0
    screenshot(page, "team-signed-out")


def test_two_reviewers_share_the_queue_and_a_viewer_cannot_decide(
    team: Dashboard, person: Callable[[], Page]
) -> None:
    rv, rw = person(), person()
    sign_in(rv, team, "rv-1")
    sign_in(rw, team, "rw-2")

    # both on the oldest run, both decide: one wins, the other is told, nothing overwritten
    open_review(rv, team)
    open_review(rw, team)
    fill_decision(rv, "regression", "the footer is gone from every page")
    fill_decision(rw, "no regression", "the footer moved into the menu")
    resolve(rv)
    expect(rv.get_by_text("Resolved run r-race as")).to_be_visible()
    resolve(rw)
    expect(
        rw.get_by_text("Run r-race is no longer waiting: Rv resolved it as 'regression'")
    ).to_be_visible()
    screenshot(rw, "team-review-beaten")
    with Store(team.database_url) as store:
        (row,) = store.reviews("r-race")
        assert (row.reviewer, row.label) == ("Rv", "regression")
        assert (row.reviewer_issuer or "").startswith("http://localhost:")
        assert (row.reviewer_subject, row.reviewer_email) == ("rv-1", "rv@example.com")

    # a claim is a lease the other sees; it holds against the other's decision
    open_review(rv, team)
    rv.get_by_test_id("stMain").get_by_role("button", name="Claim").click()
    wait_idle(rv)
    expect(rv.get_by_text("claimed by you")).to_be_visible()
    open_review(rw, team)
    expect(rw.get_by_text("claimed by Rv until").first).to_be_visible()
    screenshot(rw, "team-review-claimed")
    fill_decision(rw, "no regression", "the footer moved into the menu")
    resolve(rw)
    expect(rw.get_by_text("your decision was not written")).to_be_visible()
    fill_decision(rv, "regression", "the footer is gone from every page")
    resolve(rv)
    expect(rv.get_by_text("Resolved run r-claim as")).to_be_visible()

    # a viewer browses the queue and the Run page, but neither resolves nor spends
    vi = person()
    sign_in(vi, team, "vi-3")
    open_review(vi, team, "?role=admin&reviewer=Rv&review_resolve_r-viewer=1")
    main = vi.get_by_test_id("stMain")
    expect(main.get_by_text("deciding this run needs the reviewer role")).to_be_visible()
    assert main.get_by_role("button", name="Resolve").count() == 0
    assert main.get_by_role("button", name="Claim").count() == 0
    screenshot(vi, "team-review-viewer")
    vi.goto(f"{team.url}/run?run.submit=true&role=runner")
    wait_idle(vi)
    run_button = vi.get_by_test_id("stMain").get_by_role("button", name="Run", exact=True)
    expect(run_button).to_be_disabled()
    expect(vi.get_by_text("needs the runner role")).to_be_visible()
    with Store(team.database_url) as store:
        assert [r.run_id for r in store.review_queue()] == ["r-viewer"]
        assert store.reviews("r-viewer") == []
        assert store.list_runs()[1] == 3  # the viewer started nothing
    log = Path(team.log).read_text()
    assert COOKIE_SECRET not in log and CLIENT_SECRET not in log


@pytest.mark.parametrize("which", ["dashboard", "team"])
def test_xsrf_stays_on(request: pytest.FixtureRequest, which: str) -> None:
    """With sign-in and without: a write without the XSRF token is refused."""
    started: Dashboard = request.getfixturevalue(which)
    port = started.url.rsplit(":", 1)[1]
    upload = urllib.request.Request(
        f"http://127.0.0.1:{port}/_stcore/upload_file/session/file", data=b"x", method="PUT"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(upload, timeout=10)
    assert refused.value.code == 403
