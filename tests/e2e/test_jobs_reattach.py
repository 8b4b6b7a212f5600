"""Reload and re-attach, in headless Chromium: the address carries the run or the batch, so a
reload of a running vote or batch shows it live again; a SIGKILLed dashboard, restarted on the
same store, shows its batch again and finishes it (the job resumes from the store)."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from core.jobs import JobStore
from core.store import Store
from tests.e2e.conftest import Dashboard, leaves_loopback, run_dashboard, screenshot, wait_idle

pytestmark = pytest.mark.e2e

SLOW = {"TALLY_SIM_TIME_SCALE": "12"}  # a sim call takes seconds: still running on reload
LONG_MS = 120_000
ROWS = "text\n" + "".join(f"Does change {i} break the build?\n" for i in range(4))


@pytest.fixture
def tab(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    outside: list[str] = []
    context.on("request", lambda r: outside.append(r.url) if leaves_loopback(r.url) else None)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()
    assert not outside, f"requests left loopback: {sorted(set(outside))[:5]}"


def open_path(page: Page, dashboard: Dashboard, path: str) -> None:
    page.goto(f"{dashboard.url}/{path}")
    wait_idle(page)


def start_batch(page: Page, dashboard: Dashboard) -> str:
    open_path(page, dashboard, "")  # the main script registers the pages first
    open_path(page, dashboard, "batch")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": "reattach.csv", "mimeType": "text/csv", "buffer": ROWS.encode()}]
    )
    wait_idle(page)
    field = page.get_by_role("textbox", name="Batch name (optional)")
    field.fill("reattach")
    field.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Run batch").click()
    expect(page.get_by_text(re.compile(r"\d+ of 4 runs finished"))).to_be_visible()
    page.wait_for_url(re.compile(r"[?&]batch=\w+"))
    match = re.search(r"batch=(\w+)", page.url)
    assert match is not None
    return match.group(1)


def test_reloading_a_running_vote_and_batch_shows_them_live(tab: Page, tmp_path: Path) -> None:
    with run_dashboard(tmp_path, SLOW) as dashboard:
        open_path(tab, dashboard, "")
        open_path(tab, dashboard, "run")
        box = tab.get_by_label("Input text")
        box.fill("Is the sky blue on a clear day?")
        box.press("Control+Enter")
        wait_idle(tab)
        tab.get_by_role("button", name="Run", exact=True).click()
        expect(tab.get_by_text(re.compile(r"\d+ of \d+ calls landed"))).to_be_visible()
        tab.wait_for_url(re.compile(r"[?&]run=\w+"))
        run_url = tab.url
        tab.reload()
        wait_idle(tab)
        assert tab.url == run_url
        expect(tab.get_by_role("heading", name="Running")).to_be_visible()
        expect(tab.get_by_text(re.compile(r"\d+ of \d+ calls landed"))).to_be_visible()
        screenshot(tab, "run-reattached")
        expect(tab.get_by_role("heading", name="Result")).to_be_visible(timeout=LONG_MS)

        batch_id = start_batch(tab, dashboard)
        tab.reload()
        wait_idle(tab)
        expect(tab.get_by_text(re.compile(r"\d+ of 4 runs finished"))).to_be_visible()
        screenshot(tab, "batch-reattached")
        main = tab.locator('[data-testid="stMain"]')
        expect(main.get_by_text("Done: 4 runs.")).to_be_visible(timeout=LONG_MS)
        with Store(dashboard.database_url) as store:
            (job,) = JobStore(store).list_jobs(kinds=["batch"])
            assert (job.result_ref, job.status, job.done) == (batch_id, "done", 4)


def test_a_killed_dashboard_restarted_shows_and_finishes_its_batch(
    tab: Page, tmp_path: Path
) -> None:
    with run_dashboard(tmp_path, SLOW) as first:
        batch_id = start_batch(tab, first)
        batch_url = tab.url.replace(first.url, "")
        os.killpg(first.pid, signal.SIGKILL)  # no cleanup, no goodbye
    with Store(first.database_url) as store:
        (job,) = JobStore(store).list_jobs(kinds=["batch"])
        assert job.status == "running" and job.done < 4  # as the dead one left it
    with run_dashboard(tmp_path, SLOW) as second:
        open_path(tab, second, "")
        open_path(tab, second, batch_url.lstrip("/"))
        main = tab.locator('[data-testid="stMain"]')
        expect(main.get_by_text(re.compile(r"\d+ of 4 runs finished"))).to_be_visible()
        expect(
            main.get_by_text(re.compile(r"resumed: its executor \(pid \d+ on .+\) has exited"))
        ).to_be_visible()
        screenshot(tab, "batch-after-restart")
        expect(main.get_by_text("Done: 4 runs.")).to_be_visible(timeout=LONG_MS)
        with Store(second.database_url) as store:
            ended = JobStore(store).get(job.id)
            assert (ended.status, ended.attempts, ended.result_ref) == ("done", 2, batch_id)
            assert store.batch_counts(batch_id)["done"] == 4
