"""A new user's first session, end to end in headless Chromium, as ``make run`` starts the
dashboard: a deep link straight to a page, a run whose spend is shown before it starts and whose
fan-out is drawn, a tie sent to review and decided again under another policy with no new
calls, the review resolved, the run in History with who resolved it, a bundled batch and its
what-if, the Experiments page with its planned spend, and the Models page. A screenshot at each
step goes to tests/artifacts/screenshots/first-*.png (ignored by git); the dashboard's log must
hold no traceback when the tabs close.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core import datasets
from core.api import Tally, build_policy, build_task
from core.panel import ModelSpec
from core.result import DecisionStatus
from core.spec import RunSpec
from core.store import Store
from tests.e2e.conftest import Dashboard, leaves_loopback, screenshot
from tests.e2e.test_review_batch import wait_idle

pytestmark = pytest.mark.e2e

LONG_MS = 90_000
TIE_MODELS = ["sim:sim-strong", "sim:sim-fast"]
LABELS = ["regression", "no regression"]
SUFFIX = " (first session)"  # inputs no other test sends: the sim's sample counters start at 0
CONSERVATIVE = "Conservative order (most conservative first; used by the conservative tie-break)"
CHAIN = "Tie-break chain (in the order chosen)"
WHATIF_CHAIN = "Tie-break chain (in the order chosen; offline branches only: no new calls)"


def find_tie() -> str:
    """A bundled input, made unique, on which the two models answer differently at their first
    sample: the in-process sim with seed 0 answers as the dashboard's sim server will."""
    task = build_task(labels=LABELS)
    items = sorted(datasets.load_set("regression").items, key=lambda item: -item.hardness)

    async def main() -> str:
        async with Tally.open(persist=False) as tally:
            panel = tally.panel([ModelSpec.parse(m, params={"seed": 0}) for m in TIE_MODELS])
            spec = RunSpec(task=task, panel=panel, policy=build_policy(tie_break="human"))
            for item in items:
                text = item.text + SUFFIX
                result = await tally.vote(text, spec=spec)
                if result.decision.status == DecisionStatus.NEEDS_REVIEW:
                    return text
        raise AssertionError("no bundled item splits the two models")

    with ThreadPoolExecutor(max_workers=1) as pool:  # Playwright holds this thread's loop
        return pool.submit(anyio.run, main).result()


def main_pane(page: Page) -> Locator:
    return page.get_by_test_id("stMain")


def widget(page: Page, testid: str, label: str | re.Pattern[str]) -> Locator:
    """A Streamlit widget by its kind and its label (the whole label, or a pattern)."""
    text = (
        page.get_by_text(label, exact=True) if isinstance(label, str) else page.get_by_text(label)
    )
    return page.get_by_test_id(testid).filter(has=text).first


def choose(
    page: Page, testid: str, label: str | re.Pattern[str], option: str | re.Pattern[str]
) -> None:
    box = widget(page, testid, label)
    box.scroll_into_view_if_needed()
    exact = isinstance(option, str)
    item = page.get_by_role("option", name=option, exact=exact).first
    for _ in range(3):  # a click that lands while the page redraws does not open the list
        box.get_by_role("combobox").click()
        try:
            item.wait_for(state="visible", timeout=5_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    item.click()
    if testid == "stMultiSelect":  # it stays open after a pick; Escape would clear a selectbox
        page.keyboard.press("Escape")
    wait_idle(page)


def fill(page: Page, label: str, text: str, *, area: bool = False) -> None:
    """Fill a text input or area by its label and commit it, as Enter (Ctrl+Enter) does."""
    field = page.get_by_label(label, exact=True)
    field.fill(text)
    field.press("Control+Enter" if area else "Enter")
    wait_idle(page)


def set_number(page: Page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    wait_idle(page)


def open_at(page: Page, dashboard: Dashboard, path: str) -> None:
    page.goto(f"{dashboard.url}/{path}")
    wait_idle(page)


def test_a_new_users_first_session(
    browser: Browser, dashboard: Dashboard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TALLY_SIM_URL", "TALLY_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0")
    text = find_tie()
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    outside: list[str] = []
    context.on("request", lambda r: outside.append(r.url) if leaves_loopback(r.url) else None)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        walk(page, dashboard, text)
    except BaseException:
        screenshot(page, "first-failed")  # where it stopped, for whoever reads the failure
        raise
    context.close()
    assert not outside, sorted(set(outside))[:5]
    log = dashboard.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def walk(page: Page, dashboard: Dashboard, text: str) -> None:
    """The session, step by step, with a screenshot at each."""
    main = main_pane(page)

    # 1. a deep link straight to Run: the page opens
    open_at(page, dashboard, "run")
    expect(page.get_by_role("heading", name="Run a vote")).to_be_visible()

    # 2. the form: a pasted input, two models, N=2, a conservative order, ties to review
    fill(page, "Input text", text, area=True)
    fill(page, "Labels (comma-separated)", ", ".join(LABELS))
    choose(page, "stMultiSelect", CONSERVATIVE, "regression")
    choose(page, "stMultiSelect", CONSERVATIVE, "no regression")
    choose(page, "stSelectbox", "Model", "sim:sim-strong")
    fill(page, "Other models (provider:model, comma-separated)", "sim:sim-fast")
    set_number(page, "N: votes per run", 2)
    choose(page, "stMultiSelect", CHAIN, "send to the Review queue")
    spend = main.get_by_test_id("stAlert").filter(has_text="Before it runs").first
    expect(spend).to_contain_text("2 calls")
    expect(spend).to_contain_text("at 8 at a time")
    screenshot(page, "first-01-run-form")

    # 3. run it: the tie goes to review, and the fan-out is drawn
    page.get_by_role("button", name="Run", exact=True).click()
    banner = main.get_by_test_id("stAlert").filter(has_text="NEEDS REVIEW").first
    expect(banner).to_be_visible(timeout=LONG_MS)
    wait_idle(page)
    expect(main.get_by_text(re.compile("^Fan-out timeline: one lane per request"))).to_be_visible()
    screenshot(page, "first-02-tie")

    # 4. what if the tie had gone to the most conservative answer? no new calls
    main.get_by_text("What if: decide this run under another policy").click()
    wait_idle(page)
    chain = widget(page, "stMultiSelect", WHATIF_CHAIN).get_by_role("combobox")
    chain.click()
    page.keyboard.press("Backspace")  # drop the run's own "send to the Review queue"
    page.keyboard.press("Escape")
    wait_idle(page)
    choose(page, "stMultiSelect", WHATIF_CHAIN, "take the most conservative tied label")
    page.get_by_role("button", name="Decide again").click()
    wait_idle(page)
    expect(main.get_by_text("As it ran", exact=False).first).to_be_visible()
    expect(
        main.get_by_test_id("stAlert").filter(has_text="DECIDED: regression").first
    ).to_be_visible()
    expect(main.get_by_text(re.compile(r"No new calls: cost \$0"))).to_be_visible()
    screenshot(page, "first-03-what-if")
    with Store(dashboard.database_url) as store:
        rows, _ = store.list_runs()
        tied = next(r for r in rows if r.input == text and r.status == "needs_review")

    # 5. the review queue: a person resolves the tie, with a reason
    open_at(page, dashboard, "review")
    choose(page, "stSelectbox", re.compile(r"^Waiting for review"), re.compile(tied.run_id))
    fill(page, "Your name", "Ana First")
    choose(page, "stSelectbox", "Final label", "regression")
    fill(page, "Reason", "the diff removes the pay button", area=True)
    page.get_by_role("button", name="Resolve").click()
    wait_idle(page)
    expect(main.get_by_text(f"Resolved run {tied.run_id} as")).to_be_visible()
    screenshot(page, "first-04-review")

    # 6. History: the run, resolved, and who resolved it
    open_at(page, dashboard, "history")
    choose(page, "stSelectbox", "Open a run from this page", re.compile("resolved"))
    expect(main.get_by_text("Resolved by a reviewer", exact=True)).to_be_visible()
    expect(main.get_by_text(re.compile("Ana First chose regression"))).to_be_visible()
    screenshot(page, "first-05-history")

    # 7. a bundled batch, its spend shown first, then decided again under strict majority
    open_at(page, dashboard, "batch")
    page.get_by_text("A bundled labelled set", exact=True).click()
    wait_idle(page)
    set_number(page, "First N items", 12)
    expect(main.get_by_test_id("stAlert").filter(has_text="Before it runs").first).to_contain_text(
        "over 12 runs"
    )
    screenshot(page, "first-06-batch-form")
    page.get_by_role("button", name="Run batch").click()
    expect(main.get_by_text(re.compile(r"Done: 12 runs"))).to_be_visible(timeout=LONG_MS)
    wait_idle(page)
    main.get_by_text("What if: decide the whole batch under another policy").click()
    wait_idle(page)
    choose(page, "stSelectbox", "Decide by", "strict")
    page.get_by_role("button", name="Decide every run again").click()
    expect(main.get_by_text(re.compile(r"runs changed their decision"))).to_be_visible(
        timeout=LONG_MS
    )
    screenshot(page, "first-07-batch-what-if")

    # 8. Experiments: a curve draw tells its cost before it starts
    open_at(page, dashboard, "experiments")
    draw = main.get_by_test_id("stAlert").filter(has_text="Before it runs").first
    if not draw.is_visible():  # curves stored already: the draw's form is folded
        main.get_by_text("New curve: draw K answers per item per model").click()
        wait_idle(page)
    expect(draw).to_be_visible()
    screenshot(page, "first-08-experiments")

    # 9. Models: what is configured and what it costs
    open_at(page, dashboard, "models")
    expect(main.get_by_text("Prices in use")).to_be_visible()
    screenshot(page, "first-09-models")
