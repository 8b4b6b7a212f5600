"""End to end in headless Chromium against the dashboard as ``make run`` starts it: a vote run
from the Run page lands call by call and shows its decision; History lists it and opens it;
model output full of HTML, script tags, markdown images and links stays inert text."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from playwright.sync_api import Locator, Page, Request, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core import datasets
from core.api import Tally, build_policy, build_task
from core.panel import Panel
from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.spec import RunSpec
from core.store import BatchItem, Store
from tests.e2e.conftest import Dashboard, free_port, wait_idle

pytestmark = pytest.mark.e2e

Goto = Callable[[str], Page]
Shoot = Callable[..., Path]
LONG_MS = 90_000
SEED_PANEL = ["sim:sim-strong", "sim:sim-mid", "sim:sim-fast", "sim:sim-biased", "sim:sim-flaky"]
REGRESSION = datasets.load_set("regression")
REGRESSION_TASK = {
    "labels": REGRESSION.labels,
    "synonyms": REGRESSION.synonyms,
    "conservative": REGRESSION.format["conservative_order"],
    "template": REGRESSION.template,
}
DECISION = re.compile(r"DECIDED|ESCALATED|RESOLVED|TIE|NEEDS REVIEW|NO CONVERGENCE|FAILED")


def widget(page: Page, testid: str, label: str) -> Locator:
    """A Streamlit widget by its kind and its visible label."""
    return page.get_by_test_id(testid).filter(has=page.get_by_text(label, exact=True)).first


def choose(page: Page, testid: str, label: str, option: str | re.Pattern[str]) -> None:
    """Open a selectbox or multiselect and click one of its options."""
    box = widget(page, testid, label)
    box.scroll_into_view_if_needed()
    item = page.get_by_role("option", name=option).first
    for _ in range(3):  # a click that lands while the page redraws does not open the list
        box.get_by_role("combobox").click()
        try:
            item.wait_for(state="visible", timeout=5_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    item.click()
    page.keyboard.press("Escape")  # a multiselect stays open after a pick
    wait_idle(page)


def test_a_vote_lands_call_by_call_and_shows_its_decision(goto: Goto, shoot: Shoot) -> None:
    page = goto("run")
    page.get_by_text("Pick from a bundled set", exact=True).click()
    wait_idle(page)
    # the picked item reaches the widgets in the browser before anything else is touched:
    # a click sent earlier would carry the old, empty values back
    expect(page.get_by_label("Input text")).to_have_value(re.compile(r"\S"))
    expect(page.get_by_label("Labels (comma-separated)")).to_have_value(re.compile("regression"))
    page.get_by_text("A mixed panel", exact=True).click()
    wait_idle(page)
    choose(
        page, "stMultiSelect", "Tie-break chain (in the order chosen)", "expand: draw k more votes"
    )
    choose(
        page, "stMultiSelect", "Tie-break chain (in the order chosen)", "send to the Review queue"
    )
    shoot("run-form")

    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_text(re.compile(r"\d+ of \d+ calls landed"))).to_be_visible()
    shoot("run-live")

    banner = page.get_by_test_id("stAlert").filter(has_text=DECISION).first
    expect(banner).to_be_visible(timeout=LONG_MS)
    wait_idle(page)
    expect(page.get_by_role("heading", name="Result")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    calls = page.get_by_test_id("stDataFrame").first
    expect(calls).to_be_visible()
    page.get_by_text("Raw replies (plain text)").click()
    expect(page.get_by_test_id("stCode").first).to_be_visible()
    shoot("run", docs=True)


def payload_run(image_port: int) -> tuple[RunResult, str, list[str]]:
    """A stored run whose replies try every way model output could become live markup."""
    img = f"http://127.0.0.1:{image_port}/img.png"
    md_img = f"http://127.0.0.1:{image_port}/md.png"
    payload = (
        f'<img src="{img}" onerror="window.__pwned=1">'
        "<script>window.__pwned=1</script>"
        f" ![chart]({md_img}) [click me](javascript:window.__pwned=1) <b>bold</b>"
    )
    calls = [
        CallResult(
            slot=slot,
            model="sim:sim-mid",
            status=CallStatus.OK,
            answer=payload,
            raw=payload,
            latency_ms=120.0,
            tokens_in=10,
            tokens_out=20,
            cost_usd=0.0001,
        )
        for slot in range(2)
    ]
    result = RunResult(
        run_id=f"payload{int(time.time())}",
        input="payload run: a reply full of markup",
        spec=RunSpec(
            task=build_task(answer_format="text"),
            panel=Panel.build(["sim:sim-mid"], 2),
            policy=build_policy(),
        ),
        decision=Decision(
            status=DecisionStatus.DECIDED, label=payload, margin=2.0, reason=f"{payload} won"
        ),
        votes={payload: 2},
        calls=calls,
        cost_usd=0.0002,
        latency_ms=130.0,
    )
    return result, payload, [img, md_img]


def seed_batch(database_url: str, size: int = 30) -> str:
    """A real batch of the hardest bundled inputs through a mixed panel, on the in-process
    sim, so History has costs, latencies, ties and agreement to draw."""
    hardest = sorted(REGRESSION.items, key=lambda item: -item.hardness)[:size]
    items = [BatchItem(i, item.id, item.text, item.gold) for i, item in enumerate(hardest)]

    async def main() -> str:
        async with Tally.open(database_url=database_url) as tally:
            panel = tally.panel(SEED_PANEL, 4)  # an even N: some votes split 2-2
            return await tally.run_batch(
                items,
                spec=RunSpec(
                    task=build_task(**REGRESSION_TASK),
                    panel=panel,
                    policy=build_policy(tie_break="expand:2,human"),
                ),
                name="regression sample",
                source="library",
            )

    # Playwright's sync API keeps an event loop running in this thread: use another one
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(anyio.run, main).result()


def test_history_opens_a_run_and_model_output_stays_inert(
    goto: Goto, page: Page, shoot: Shoot, dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TALLY_SIM_URL", "TALLY_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0.1")
    batch_id = seed_batch(dashboard.database_url)
    result, payload, image_urls = payload_run(free_port())
    with Store(dashboard.database_url) as store:
        store.ensure_schema()
        store.save_run(result, source="library")
    requests: list[str] = []

    def seen(request: Request) -> None:
        requests.append(request.url)

    page.on("request", seen)
    goto("history")
    expect(page.get_by_text(re.compile(r"runs? match"))).to_be_visible()
    with Store(dashboard.database_url) as store:
        assert store.batch_counts(batch_id)["done"] == 30
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    shoot("history", docs=True)

    choose(page, "stSelectbox", "Open a run from this page", re.compile("payload run"))
    banner = page.get_by_test_id("stAlert").filter(has_text="DECIDED").first
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("<script>window.__pwned=1</script>")
    expect(banner).to_contain_text(f"![chart]({image_urls[1]})")
    page.get_by_text("Raw replies (plain text)").click()
    code = page.get_by_test_id("stCode").filter(has_text="window.__pwned").first
    expect(code).to_be_visible()
    assert code.inner_text().strip() == payload
    page.wait_for_timeout(1000)  # give any injected image or script the time to fire
    shoot("history-detail")

    assert page.evaluate("() => window.__pwned") is None
    assert not [u for u in requests if any(u.startswith(i) for i in image_urls)]
    for root in page.locator("[data-testid=stMain]").all():
        assert root.locator("img[src*='127.0.0.1']").count() == 0
        assert root.locator("script:has-text('__pwned')").count() == 0
        assert root.locator("a[href^='javascript']").count() == 0
        assert root.locator("b:has-text('bold')").count() == 0


def test_history_lists_runs_from_the_run_page(goto: Goto, shoot: Shoot) -> None:
    page = goto("history")
    choose(page, "stSelectbox", "Time", "all time")
    expect(page.get_by_text(re.compile(r"\d+ runs? match"))).to_be_visible()
    choose(page, "stMultiSelect", "Decision status", "decided")
    wait_idle(page)
    expect(page.get_by_text(re.compile(r"runs? match|No runs match"))).to_be_visible()
    shoot("history-filtered")


def test_home_shows_the_pattern_and_recent_activity(goto: Goto, shoot: Shoot) -> None:
    page = goto("")
    expect(page.get_by_role("heading", name="Tally", exact=True)).to_be_visible()
    expect(page.get_by_text("five is the default")).to_be_visible()
    expect(page.get_by_role("heading", name="Recent activity")).to_be_visible()
    expect(page.get_by_test_id("stMetric").first).to_be_visible()
    shoot("home")
