"""End-to-end fixtures: the dashboard started the way ``make run`` starts it, and a headless
Chromium driving it.

``dashboard`` runs ``python -m core dashboard`` (the sim server plus Streamlit) on free loopback
ports with a throw-away SQLite store; ``browser`` is Debian's Chromium (``/usr/bin/chromium``),
never a downloaded build. Screenshots go to ``tests/artifacts/screenshots/`` (ignored by git);
the README's pictures in ``docs/screenshots/`` are refreshed only by ``make screenshots``, so a
test run never changes a tracked file. Every page a test opens is watched: a request to any host
but loopback fails the test (the dashboard must work offline).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
REFRESH_DOCS = os.environ.get("TALLY_REFRESH_DOCS_SCREENSHOTS") == "1"
"""Set by ``make screenshots``: also copy the README's pictures into docs/screenshots/."""
START_TIMEOUT_S = 90.0
MAX_SCREENSHOT_HEIGHT = 6000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Dashboard:
    url: str
    database_url: str
    sim_url: str
    log: Path
    pid: int  # the process group of the dashboard and its sim server


def _get(url: str) -> str | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    try:
        with opener.open(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


@contextmanager
def run_dashboard(
    tmp: Path, extra_env: Mapping[str, str] | None = None, *, host: str = "127.0.0.1"
) -> Iterator[Dashboard]:
    """``python -m core dashboard`` on free loopback ports with a throw-away SQLite store and
    no secrets but ``extra_env``'s (``TALLY_SECRETS``: sign-in), reached at ``host``."""
    port, sim_port = free_port(), free_port()
    database_url = f"sqlite:///{tmp / 'e2e.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        env.pop(key, None)  # the simulated panel, whatever the machine has set
    env.update(
        TALLY_DATABASE_URL=database_url,
        TALLY_SIM_TIME_SCALE="0.05",  # read by an in-process sim; the sim server runs at 1.0
        TALLY_TRUST_ENV="0",
        TALLY_SECRETS=str(tmp / "no-secrets.toml"),  # not the machine's: sign-in off
        NO_PROXY="127.0.0.1,localhost",
        STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        # files edited while the tests run must not make Streamlit re-import modules mid-test
        STREAMLIT_SERVER_FILE_WATCHER_TYPE="none",
    )
    env.update(extra_env or {})
    log = tmp / "dashboard.log"
    command = [sys.executable, "-m", "core", "dashboard", "--port", str(port)]
    command += ["--sim-port", str(sim_port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped together below
        )
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while _get(f"http://127.0.0.1:{port}/_stcore/health") != "ok":
            if proc.poll() is not None:
                pytest.fail(f"the dashboard exited early:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield Dashboard(url, database_url, f"http://127.0.0.1:{sim_port}/v1", log, proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@pytest.fixture(scope="package")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The dashboard as ``make run`` starts it; stopped after the browser tests."""
    with run_dashboard(tmp_path_factory.mktemp("dashboard")) as started:
        yield started


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """The system Chromium, headless; never a browser downloaded by Playwright.

    Package-scoped: Playwright's sync API keeps an event loop running in this thread until it
    stops, which would break every later test that runs a loop of its own."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


def leaves_loopback(url: str) -> bool:
    """Whether a request the page made goes anywhere but this machine's loopback."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "chrome", "chrome-extension"):
        return False
    return parts.hostname not in LOOPBACK_HOSTS


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    """A fresh browser page; any request it makes off loopback fails the test at the end."""
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


def wait_idle(page: Page, timeout_ms: float = 30_000) -> None:
    """Wait until no script run is in progress and every element has been drawn (the browser
    loads some widgets late and shows a skeleton until then)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            return app && app.getAttribute('data-test-script-state') === 'notRunning'
                && !document.querySelector('[data-testid="stSkeleton"]');
        }""",
        timeout=timeout_ms,
    )


def open_page(page: Page, dashboard: Dashboard, path: str = "") -> None:
    """Go to a dashboard page (``run``, ``history``, ...) and wait for it to render."""
    page.goto(f"{dashboard.url}/{path}")
    wait_idle(page)


def screenshot(page: Page, name: str, *, docs: bool = False) -> Path:
    """Save the whole page as tests/artifacts/screenshots/<name>.png (and, for the README under
    ``make screenshots``, docs/screenshots/<name>.png). Streamlit scrolls inside its main pane,
    not the document, so the window is made as tall as that pane for the picture."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    size = page.viewport_size or {"width": 1440, "height": 1000}
    height = int(
        page.evaluate(
            """() => {
                const main = document.querySelector('[data-testid="stMain"]');
                return main ? main.scrollHeight : document.body.scrollHeight;
            }"""
        )
    )
    tall = min(max(height, size["height"]), MAX_SCREENSHOT_HEIGHT)
    if tall > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": tall})
        page.wait_for_timeout(600)  # charts redraw at the new size
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        if tall > size["height"]:
            page.set_viewport_size(size)
    if docs and REFRESH_DOCS:
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / f"{name}.png")
    return path


@pytest.fixture
def goto(page: Page, dashboard: Dashboard) -> Callable[[str], Page]:
    """``goto("history")`` opens a dashboard page and waits for it to render."""

    def go(path: str = "") -> Page:
        open_page(page, dashboard, path)
        return page

    return go


@pytest.fixture
def shoot(page: Page) -> Callable[..., Path]:
    """``shoot("run", docs=True)`` saves a screenshot of the current page."""

    def take(name: str, *, docs: bool = False) -> Path:
        return screenshot(page, name, docs=docs)

    return take
