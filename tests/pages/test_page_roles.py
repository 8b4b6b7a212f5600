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
    parts = [*at.markdown, *at.caption, *at.code, *at.text, *at.success, *at.error, *at.info]
    parts += [*at.warning]
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
    assert store.list_runs()[1] == 0 and ui.get_runner().jobs.list_jobs() == []  # refused

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


def blind_run(run_id: str) -> Any:
    run = waiting_run(run_id, 1000.0)
    return run.model_copy(
        update={"decision": run.decision.model_copy(update={"branches": ["human:2"]})}
    )


def decide_on_page(at: AppTest, run_id: str, label: str, reason: str) -> AppTest:
    at.selectbox(key=f"review_label_{run_id}").select(label).run()
    at.text_area(key=f"review_reason_{run_id}").input(reason).run()
    return at.button(key=f"review_resolve_{run_id}").click().run()


def captions(at: AppTest) -> str:
    """Every caption as read, markdown escapes taken out."""
    return "\n".join(c.value.replace("\\", "") for c in at.caption)


def test_a_blind_double_review_on_the_page(page_test: PageTest, store: Store) -> None:
    """Two reviewers decide without seeing each other's decision; they disagree, so the run
    waits for an admin, who sees both and resolves it; the agreement counter counts the pair."""
    store.save_run(blind_run("r-blind"), source="ui")
    rv = as_user(page_test, "pages/review.py", signed_in("rv@example.com", "Rv")).run()
    assert "blind double review: 0 of 2 decided" in captions(rv)
    decide_on_page(rv, "r-blind", "regression", "the footer is gone for good")
    assert any("Your blind decision on run r\\-blind" in s.value for s in rv.success)
    assert "review_resolve_r-blind" not in [b.key for b in rv.button]  # not twice

    second = signed_in("root@example.com", "Root")  # an admin may give the second decision
    other = as_user(page_test, "pages/review.py", second).run()
    assert "blind double review: 1 of 2 decided" in captions(other)
    assert "the footer is gone for good" not in shown(other)  # blind: the first is not shown
    decide_on_page(other, "r-blind", "no regression", "the footer moved to the menu")
    assert any("differs from the first reviewer" in s.value for s in other.success)

    admin = as_user(page_test, "pages/review.py", second).run()
    assert "two blind reviewers disagreed: an admin decides" in captions(admin)
    text = shown(admin)
    assert "the footer is gone for good" in text and "the footer moved to the menu" in text
    reviewer_view = as_user(page_test, "pages/review.py", signed_in("rv@example.com", "Rv")).run()
    assert "review_resolve_r-blind" not in [b.key for b in reviewer_view.button]
    assert "needs the admin role" in captions(reviewer_view)
    decide_on_page(admin, "r-blind", "regression", "the footer is required on checkout")
    assert store.get_run("r-blind").decision.label == "regression"
    assert [r.stage for r in store.reviews("r-blind")] == ["blind", "blind", "admin"]
    assert any(m.label == "Blind reviewers agree" and m.value == "0% of 1" for m in admin.metric)


def test_the_app_refuses_to_serve_off_loopback_without_sign_in(page_test: PageTest) -> None:
    """A ``streamlit run`` by hand on another address serves one line, and no page."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        at = page_test("app.py").run()
        assert [e.value for e in at.error] == [
            "refusing to listen on 0.0.0.0: sign-in is not configured ([auth] in "
            ".streamlit/secrets.toml), and without it Tally is single-user on 127.0.0.1"
        ]
        assert not at.title
        signed = page_test("app.py")
        signed.secrets.update(SECRETS)
        signed.user = {"is_logged_in": False}
        signed.run()
        assert not signed.error and [b.label for b in signed.button] == ["Sign in"]
    finally:
        config.set_option("server.address", before)
