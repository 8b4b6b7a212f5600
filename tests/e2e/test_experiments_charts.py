"""End to end in headless Chromium: the Experiments page of the dashboard as ``make run`` starts
it. A small curve is drawn through the background runner against the dashboard's sim server,
its draw is read back on the Disagreement tab, and the three shapes of the throughput wall are
shown by the sim demo. Every chart is saved as a screenshot of its own."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core.store import Store

if TYPE_CHECKING:
    from tests.e2e.conftest import Dashboard

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "tests" / "artifacts" / "screenshots"
LONG_MS = 120_000

SCRIPT_STATE = """(want) => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app && app.getAttribute('data-test-script-state') === want;
}"""


def wait_idle(page: Page, timeout_ms: float = 30_000) -> None:
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function(SCRIPT_STATE, arg="running", timeout=1_500)
    page.wait_for_function(SCRIPT_STATE, arg="notRunning", timeout=timeout_ms)


def fill(page: Page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True).first
    field.fill(value)
    field.press("Enter")
    wait_idle(page)


def charts(page: Page) -> Locator:
    """The plotly charts of the tab on show."""
    return page.locator('[role="tabpanel"]:visible [data-testid="stPlotlyChart"]')


def save_chart(chart: Locator, name: str) -> Path:
    """A screenshot of one chart, once plotly has drawn it."""
    chart.scroll_into_view_if_needed()
    expect(chart.locator(".main-svg").first).to_be_visible()
    chart.page.wait_for_timeout(600)  # plotly's own transition after a resize
    CHARTS.mkdir(parents=True, exist_ok=True)
    path = CHARTS / f"{name}.png"
    chart.screenshot(path=str(path))
    assert path.stat().st_size > 5_000  # a drawn chart, not an empty box
    return path


def whole_page(page: Page, name: str) -> Path:
    """The whole main column, below the fold included: the app scrolls inside its own
    container, so the window is made as tall as the column for the shot."""
    CHARTS.mkdir(parents=True, exist_ok=True)
    path = CHARTS / f"{name}.png"
    size = page.viewport_size or {"width": 1440, "height": 1000}
    height = page.evaluate(
        """() => document.querySelector('[data-testid="stMainBlockContainer"]').scrollHeight"""
    )
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height + 80)})
    try:
        page.wait_for_timeout(1_000)  # plotly redraws its charts for the taller window
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(size)
    return path


def open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    wait_idle(page)


def test_the_experiments_page_draws_a_curve_and_shows_every_chart(
    page: Page,
    dashboard: Dashboard,
    goto: Callable[[str], Page],
    shoot: Callable[..., Path],
) -> None:
    goto("experiments")
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_text("No curve yet: draw one above.")).to_be_visible()
    expect(page.get_by_role("button", name="Draw and curve")).to_be_visible()
    expect(page.get_by_label("N to estimate", exact=True).first).to_have_value("1,3,5")
    wait_idle(page)
    shoot("experiments-empty")

    # -- error against N: a small draw of the default panel through the runner -----------------
    fill(page, "Items (drawn at random)", "12")
    fill(page, "K: answers per item per model", "5")
    fill(page, "N to estimate", "1,3,5")
    page.get_by_role("button", name="Draw and curve").click()
    expect(main.get_by_text("Recommended N", exact=True)).to_be_visible(timeout=LONG_MS)
    wait_idle(page)
    expect(main.get_by_text("Removed vs one call")).to_be_visible()
    halving = main.locator('[data-testid="stMetric"]').filter(has_text="Halving check")
    expect(halving.locator('[data-testid="stMetricValue"]')).to_have_text(re.compile(r"^\d\.\d\d$"))
    expect(charts(page)).to_have_count(2 + 5)  # curve, panels, a confusion matrix per model
    expect(main.get_by_text("Dawid–Skene on the draw's answers")).to_be_visible()
    save_chart(charts(page).nth(0), "experiments-curve")
    save_chart(charts(page).nth(1), "experiments-panels")
    whole_page(page, "experiments-error-vs-n")
    with Store(dashboard.database_url) as store:
        (curve,) = store.list_curves()
        assert curve.result["items"] == 12 and curve.result["k"] == 5
        batch_id = curve.result["batch_id"]
        assert store.get_batch(batch_id).status == "done"

    # -- disagreement of the draw ---------------------------------------------------------------
    open_tab(page, "Disagreement")
    expect(main.get_by_text("Fleiss' kappa", exact=True)).to_be_visible()
    expect(charts(page)).to_have_count(4)
    save_chart(charts(page).nth(0), "experiments-agreement-heatmap")
    save_chart(charts(page).nth(1), "experiments-accuracy")
    save_chart(charts(page).nth(2), "experiments-reliability")
    save_chart(charts(page).nth(3), "experiments-decision-confidence")
    calibrated = re.compile(r"\d+ decisions with gold; calibration error")
    expect(main.get_by_text(calibrated)).to_be_visible()
    whole_page(page, "experiments-disagreement")

    # -- learned reliability of the same draw: Dawid–Skene, confusion matrices, calibration ----
    page.get_by_role("button", name="Fit Dawid–Skene").click()
    expect(main.get_by_text("votes are worth")).to_be_visible(timeout=LONG_MS)
    wait_idle(page, timeout_ms=LONG_MS)
    expect(charts(page)).to_have_count(4 + 5 + 1)  # a confusion matrix per model, calibration
    save_chart(charts(page).nth(4), "experiments-confusion")
    save_chart(charts(page).nth(9), "experiments-confidence-calibration")
    whole_page(page, "experiments-learned-reliability")

    # -- the throughput wall: the sim demo in its three modes -----------------------------------
    open_tab(page, "Throughput wall")
    expect(main.get_by_text("No sweep yet: run one above.")).to_be_visible()
    modes = {"capacity 1": "capacity-1", "contention 8": "contention-8", "unlimited": "unlimited"}
    for label, mode in modes.items():
        page.get_by_text(label, exact=False).filter(visible=True).first.click()
        wait_idle(page)
        page.get_by_role("button", name="Run demo sweep").click()
        wait_idle(page, timeout_ms=LONG_MS)
        title = f"Throughput wall: sim-{mode}:sim-fast"
        expect(charts(page).first).to_contain_text(title, timeout=LONG_MS)
        save_chart(charts(page).first, f"experiments-wall-{mode}")
        if mode == "capacity-1":
            expect(main.get_by_text("SERIALISES").first).to_be_visible()
            expect(main.get_by_text("Handbook: Parallel models still serialise")).to_be_visible()
    expect(charts(page)).to_have_count(2)  # the last sweep, and the three shapes together
    save_chart(charts(page).nth(1), "experiments-wall-shapes")
    whole_page(page, "experiments-throughput-wall")
    with Store(dashboard.database_url) as store:
        sweeps = store.list_sweeps()
    verdicts = {s.name: s.result["verdict"] for s in sweeps}
    seen = {
        n: (v["shape"], [round(p["throughput"], 1) for p in v["points"]])
        for n, v in verdicts.items()
    }
    assert verdicts["sim-capacity-1:sim-fast"]["shape"] == "serialises", seen
    assert verdicts["sim-contention-8:sim-fast"]["shape"] == "falls", seen
    unlimited = verdicts["sim-unlimited:sim-fast"]
    assert unlimited["shape"] == "scales" or unlimited["ceiling"] == 8, seen
