"""Every page's role checks under AppTest with ``at.user``: with sign-in configured, a visitor
who is not signed in sees only the sign-in button, a viewer browses but neither spends nor
resolves (not even by clicking a button the page disabled, nor by URL parameters), a reviewer
resolves under their own identity, and no page shows a key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core.store import Store
from pages import ui
from tests.pages.test_review_page import waiting_run

PageTest = Callable[[str], AppTest]
PAGES = [
    "pages/home.py",
    "pages/run.py",
    "pages/history.py",
    "pages/review.py",
    "pages/batch.py",
    "pages/experiments.py",
    "pages/models.py",
]
SECRETS = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "cookie-secret-for-page-tests-only",
        "client_id": "tally",
        "client_secret": "client-secret-for-page-tests-only",
        "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
    },
    "tally": {
        "roles": {
            "admin": ["root@example.com"],
            "reviewer": ["rv@example.com"],
            "runner": ["ru@example.com"],
            "viewer": ["*"],
        }
    },
}
URL_TRICKS = {"role": "admin", "reviewer": "root", "run.submit": "true", "user": "root@example.com"}


def signed_in(email: str, name: str) -> dict[str, Any]:
    return {
        "is_logged_in": True,
        "iss": "https://idp.test",
        "sub": f"sub-{name.lower()}",
        "email": email,
        "name": name,
    }


def as_user(page_test: PageTest, page: str, user: dict[str, Any] | None) -> AppTest:
    at = page_test(page)
    at.secrets.update(SECRETS)
    at.user = user if user is not None else {"is_logged_in": False}
    for key, value in URL_TRICKS.items():
        at.query_params[key] = value
    return at


def shown(at: AppTest) -> str:
    parts = [*at.markdown, *at.caption, *at.code, *at.success, *at.error, *at.info, *at.warning]
    return "\n".join(str(p.value) for p in parts)


@pytest.mark.parametrize("page", PAGES)
def test_a_visitor_not_signed_in_sees_only_the_sign_in(page_test: PageTest, page: str) -> None:
    at = as_user(page_test, page, None).run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in"]
    assert [t.value for t in at.title] == ["Tally"]
    assert "Sign in to use Tally" in shown(at)
    assert not at.selectbox and not at.text_area and not at.dataframe  # nothing of the page


@pytest.mark.parametrize("page", PAGES)
def test_a_viewer_browses_every_page_and_is_named(page_test: PageTest, page: str) -> None:
    at = as_user(page_test, page, signed_in("vi@example.com", "Vi")).run()
    assert not at.exception
    assert "Sign in" not in [b.label for b in at.button]
    assert any("Signed in as Vi (viewer)" in c.value for c in at.sidebar.caption)


def test_an_identity_without_a_role_is_refused(page_test: PageTest) -> None:
    at = page_test("pages/home.py")
    at.secrets.update({**SECRETS, "tally": {"roles": {"admin": ["root@example.com"]}}})
    at.user = signed_in("eve@elsewhere.org", "Eve")
    at.run()
    assert [e.value for e in at.error] == [
        "Eve may not browse Tally: that needs the viewer role (held: no role)"
    ]


def test_a_viewer_cannot_spend_even_by_clicking_a_disabled_button(
    page_test: PageTest, store: Store
) -> None:
    at = as_user(page_test, "pages/run.py", signed_in("vi@example.com", "Vi")).run()
    assert at.button(key="run.submit").disabled
    assert any("needs the runner role" in c.value for c in at.caption)
    at.text_area(key="run.input").set_value("Is the sky blue?")
    crafted = at.button(key="run.submit")
    crafted.proto.disabled = False  # a hand-made websocket message ignores the disabled flag
    crafted.click().run()
    assert not at.exception
    assert store.list_runs()[1] == 0 and ui.get_runner().jobs() == []  # the runner refuses

    batch = as_user(page_test, "pages/batch.py", signed_in("vi@example.com", "Vi")).run()
    assert batch.button(key="batch.submit").disabled
    exp = as_user(page_test, "pages/experiments.py", signed_in("vi@example.com", "Vi")).run()
    assert exp.button(key="exp.draw").disabled and exp.button(key="exp.run_sweep").disabled


def test_a_runner_may_spend(page_test: PageTest) -> None:
    at = as_user(page_test, "pages/run.py", signed_in("ru@example.com", "Ru")).run()
    assert not at.button(key="run.submit").disabled


def test_a_viewer_and_a_runner_see_the_queue_but_cannot_resolve(
    page_test: PageTest, store: Store
) -> None:
    store.save_run(waiting_run("r-one", 1000.0), source="ui")
    for email, name in (("vi@example.com", "Vi"), ("ru@example.com", "Ru")):
        at = as_user(page_test, "pages/review.py", signed_in(email, name)).run()
        assert not at.exception
        assert at.selectbox(key="review_pick").value == "r-one"  # browsing is allowed
        keys = [b.key for b in at.button]
        assert "review_resolve_r-one" not in keys and "review_claim_r-one" not in keys
        assert any("deciding this run needs the reviewer role" in c.value for c in at.caption)
    assert store.reviews("r-one") == []


def test_a_reviewer_resolves_as_the_signed_in_identity(page_test: PageTest, store: Store) -> None:
    store.save_run(waiting_run("r-one", 1000.0), source="ui")
    at = as_user(page_test, "pages/review.py", signed_in("rv@example.com", "Rv")).run()
    assert not at.text_input  # no typed name while signed in
    assert any("Deciding as Rv" in c.value for c in at.caption)
    at.button(key="review_claim_r-one").click().run()
    assert any("claimed by you" in c.value for c in at.caption)
    at.selectbox(key="review_label_r-one").select("regression").run()
    at.text_area(key="review_reason_r-one").input("the footer is gone for good").run()
    at.button(key="review_resolve_r-one").click().run()
    assert not at.exception and not at.error
    (row,) = store.reviews("r-one")
    assert (row.reviewer, row.reviewer_issuer, row.reviewer_subject, row.reviewer_email) == (
        "Rv",
        "https://idp.test",
        "sub-rv",
        "rv@example.com",
    )


def test_the_other_reviewer_sees_the_claim_and_is_told_when_beaten(
    page_test: PageTest, store: Store
) -> None:
    store.save_run(waiting_run("r-one", 1000.0), source="ui")
    first = as_user(page_test, "pages/review.py", signed_in("rv@example.com", "Rv")).run()
    first.button(key="review_claim_r-one").click().run()
    root = signed_in("root@example.com", "Root")
    second = as_user(page_test, "pages/review.py", root).run()
    assert any("claimed by Rv until" in c.value for c in second.caption)
    assert "review_claim_r-one" not in [b.key for b in second.button]  # no seat is free
    second.selectbox(key="review_label_r-one").select("no regression").run()
    second.text_area(key="review_reason_r-one").input("the footer is optional here").run()
    second.button(key="review_resolve_r-one").click().run()
    assert any("claimed by Rv until" in e.value for e in second.error)
    assert store.reviews("r-one") == []  # refused, nothing written


def test_no_page_shows_a_key(
    page_test: PageTest, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-test-0123456789abcdefSECRET"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    store.save_run(waiting_run("r-one", 1000.0), source="ui")
    for page in PAGES:
        at = as_user(page_test, page, signed_in("root@example.com", "Root")).run()
        assert not at.exception, page
        everything = shown(at) + "\n".join(str(e.value) for e in at.dataframe)
        assert key not in everything and "client-secret-for-page-tests" not in everything, page
        assert "cookie-secret-for-page-tests" not in everything, page
