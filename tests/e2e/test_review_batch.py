"""End to end in headless Chromium against the dashboard as ``make run`` starts it: a tie sent to
a human is resolved on the Review page, and a small CSV batch is uploaded and runs to the end.

The tie is made the way a user of the CLI makes one: ``tally run`` with two models that disagree
and the ``human`` tie-break, against the dashboard's sim server and database. Which input makes
them disagree is found first with the in-process sim (same seed, same sample numbers through
``--seed``, so the same answers), which answers at once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from core import datasets
from core.api import Tally, build_policy, build_task
from core.panel import ModelSpec
from core.result import DecisionStatus
from core.spec import RunSpec
from core.store import Store

if TYPE_CHECKING:
    from tests.e2e.conftest import Dashboard

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"
TIE_MODELS = ["sim:sim-strong", "sim:sim-fast"]
LABELS = ["regression", "no regression"]
SEED = 0
LONG_MS = 90_000

BATCH_CSV = (
    "id,text,label\n"
    "b1,The checkout button no longer responds to clicks,regression\n"
    "b2,Only the copyright year in the footer changed,no regression\n"
    'b3,"=HYPERLINK(""http://127.0.0.1:9/x"",""click"")",no regression\n'
)


def find_disagreement() -> str:
    """A bundled input on which the two models answer differently at sample 0."""
    task = build_task(labels=LABELS)
    policy = build_policy(tie_break="human")
    candidates = sorted(
        datasets.load_set("regression").items,
        key=lambda item: -item.hardness,  # ambiguous items first: most likely to split
    )

    async def main() -> str:
        async with Tally.open(persist=False) as tally:
            panel = tally.panel([ModelSpec.parse(m, params={"seed": SEED}) for m in TIE_MODELS])
            for item in candidates:
                result = await tally.vote(
                    item.text, spec=RunSpec(task=task, panel=panel, policy=policy)
                )
                if result.decision.status == DecisionStatus.NEEDS_REVIEW:
                    return item.text
        raise AssertionError("no bundled item splits the two models")

    # Playwright's sync API keeps an event loop running in this thread: use another one
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(anyio.run, main).result()


@pytest.fixture
def in_process_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("TALLY_SIM_URL", "TALLY_CONFIG", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TALLY_SIM_TIME_SCALE", "0")
    yield


def cli_run(dashboard: Dashboard, text: str) -> dict[str, object]:
    """``tally run`` against the dashboard's sim server and store, as a user would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(
        TALLY_SIM_URL=dashboard.sim_url,
        TALLY_DATABASE_URL=dashboard.database_url,
        TALLY_TRUST_ENV="0",
        NO_PROXY="127.0.0.1,localhost",
    )
    args = [sys.executable, "-m", "core", "run", text, "--json", "--seed", str(SEED)]
    args += [a for m in TIE_MODELS for a in ("--model", m)]
    args += ["--labels", ",".join(LABELS), "--tie-break", "human"]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


SCRIPT_STATE = """(want) => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app && app.getAttribute('data-test-script-state') === want;
}"""


def open_app_page(goto: Callable[[str], Page], path: str) -> Page:
    """Open ``path`` after the home page: on a fresh server, a first request straight to a
    page's URL runs that file alone (Streamlit's older ``pages/`` folder routing) until the
    main script has registered the navigation once."""
    goto("")
    return goto(path)


def wait_idle(page: Page, timeout_ms: float = 30_000) -> None:
    """After an interaction: let the rerun it causes start (a fast one may be missed, hence
    the short wait), then wait until no script run is in progress."""
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function(SCRIPT_STATE, arg="running", timeout=1_500)
    page.wait_for_function(SCRIPT_STATE, arg="notRunning", timeout=timeout_ms)


def selectbox(page: Page, label: str) -> Locator:
    return page.locator('[data-testid="stSelectbox"]').filter(has_text=label)


def choose(page: Page, label: str, option_text: str) -> None:
    """Open a selectbox by its label and click the option containing ``option_text``."""
    box = selectbox(page, label).get_by_role("combobox")
    box.click()
    if box.get_attribute("aria-expanded") != "true":
        box.press("ArrowDown")  # a click sometimes only focuses it; the arrow key opens it
    page.get_by_role("option").filter(has_text=option_text).first.click()
    wait_idle(page)


def type_into(page: Page, label: str, text: str, *, area: bool = False) -> None:
    """Fill a text input or area by its label and commit it, as Enter (Ctrl+Enter) does."""
    field = page.get_by_role("textbox", name=label)
    field.fill(text)
    field.press("Control+Enter" if area else "Enter")
    wait_idle(page)


def click(page: Page, button: str) -> None:
    page.get_by_role("button", name=button).click()
    wait_idle(page)


def whole_page(page: Page, name: str) -> Path:
    """The whole main column, below the fold included (a full-page screenshot stops at the
    window, since the app scrolls inside its own container)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    size = page.viewport_size or {"width": 1440, "height": 1000}
    height = page.evaluate(
        """() => document.querySelector('[data-testid="stMainBlockContainer"]').scrollHeight"""
    )
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height + 80)})
    try:
        page.wait_for_timeout(500)  # let the tables lay out in the taller window
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(size)
    return path


def to_top(page: Page) -> None:
    """Scroll the app back to its title, so a screenshot starts where a reader starts."""
    page.locator("h1").first.scroll_into_view_if_needed()


def test_a_tie_sent_to_a_human_is_resolved_on_the_review_page(
    page: Page,
    dashboard: Dashboard,
    goto: Callable[[str], Page],
    shoot: Callable[..., Path],
    in_process_sim: None,
) -> None:
    text = find_disagreement()
    result = cli_run(dashboard, text)
    decision = result["decision"]
    assert isinstance(decision, dict) and decision["status"] == "needs_review", decision
    run_id = str(result["run_id"])

    open_app_page(goto, "review")
    choose(page, "Waiting for review", run_id)
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_text("Candidate answers")).to_be_visible()
    expect(main.locator('[data-testid="stCode"]').filter(has_text=text[:40]).first).to_be_visible()
    for label in LABELS:
        expect(main.get_by_text(f"{label} · 1 vote", exact=True)).to_be_visible()
    assert "sim-strong" not in main.inner_text()  # model names hidden until asked for
    whole_page(page, "review-queue")

    main.get_by_text("Show model names").click()
    wait_idle(page)
    expect(main.get_by_text("sim:sim-strong").first).to_be_visible()

    type_into(page, "Your name", "Ana E2E")
    choose(page, "Final label", "regression")
    click(page, "Resolve")
    expect(main.get_by_text("Give a reason: the audit trail records why")).to_be_visible()
    shoot("review-reason-required")
    with Store(dashboard.database_url) as store:
        assert store.reviews(run_id) == []  # refused: nothing written

    type_into(page, "Reason", "the diff removes the pay button", area=True)
    click(page, "Resolve")
    expect(main.get_by_text(f"Resolved run {run_id} as")).to_be_visible()
    audit_pick = selectbox(page, "Audit trail of a resolved run").get_by_role("combobox")
    expect(audit_pick).to_have_value(re.compile(f"^{run_id} "))
    expect(main.locator('[data-testid="stDataFrame"]').last).to_be_visible()
    to_top(page)
    shoot("review-resolved")

    with Store(dashboard.database_url) as store:
        stored = store.get_run(run_id)
        assert stored.decision.status == DecisionStatus.RESOLVED
        assert stored.decision.label in LABELS
        (row,) = store.reviews(run_id)
        assert (row.reviewer, row.reason) == ("Ana E2E", "the diff removes the pay button")
        assert row.previous_reason  # the panel's reason, kept beside the reviewer's
        assert run_id not in [r.run_id for r in store.review_queue(limit=1000)]


def test_a_bad_file_is_refused_beside_the_uploader(
    page: Page, goto: Callable[[str], Page], shoot: Callable[..., Path]
) -> None:
    open_app_page(goto, "batch")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[
            {
                "name": "broken.jsonl",
                "mimeType": "application/jsonl",
                "buffer": b'{"text": "fine"}\n{"text": "cut\n',
            }
        ]
    )
    wait_idle(page)
    expect(page.get_by_text("broken.jsonl: line 2: not valid JSON")).to_be_visible()
    shoot("batch-bad-file")


def test_a_small_csv_batch_runs_to_the_end(
    page: Page, dashboard: Dashboard, goto: Callable[[str], Page], shoot: Callable[..., Path]
) -> None:
    open_app_page(goto, "batch")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": "e2e-batch.csv", "mimeType": "text/csv", "buffer": BATCH_CSV.encode()}]
    )
    wait_idle(page)
    expect(page.get_by_text("e2e-batch.csv: ")).to_be_visible()
    type_into(page, "Labels (comma-separated)", "regression, no regression")
    type_into(page, "Batch name (optional)", "e2e three rows")
    shoot("batch-form")
    page.get_by_role("button", name="Run batch").click()
    expect(page.locator('[data-testid="stProgress"]')).to_be_visible()
    shoot("batch-running")

    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_text("Done: 3 runs.")).to_be_visible(timeout=LONG_MS)
    wait_idle(page)
    expect(main.get_by_text("Accuracy vs gold")).to_be_visible()
    expect(main.get_by_text(re.compile(r"your \d+ votes are worth"))).to_be_visible()
    expect(main.locator('[data-testid="stDataFrame"]').first).to_be_visible()
    whole_page(page, "batch-done")

    with page.expect_download() as download:
        page.get_by_role("button", name="Runs as CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    by_item = {r["item_id"]: r for r in rows}
    assert sorted(by_item) == ["b1", "b2", "b3"]
    assert by_item["b3"]["input"].startswith("'=HYPERLINK")  # a formula is exported as text
    assert all(r["status"] for r in rows)

    with Store(dashboard.database_url) as store:
        (info,) = [b for b in store.list_batches() if b.name == "e2e three rows"]
        assert info.status == "done"
        assert store.batch_counts(info.batch_id)["done"] == 3


def test_models_page_tests_the_sim_connection(
    page: Page, goto: Callable[[str], Page], shoot: Callable[..., Path]
) -> None:
    open_app_page(goto, "models")
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_text("Prices in use")).to_be_visible()
    click(page, "Test sim")
    expect(main.get_by_text("Connected in")).to_be_visible()
    to_top(page)
    shoot("models")
    expect(main.locator('[data-testid="stDataFrame"]').last).to_be_visible()
    whole_page(page, "models-whole")
