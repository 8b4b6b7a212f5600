"""Offline means offline: a demo with the network gone must not reach for any outside host.

The ``page`` fixture fails a test whose page requested anything off loopback; this walks every
page, by the navigation and by deep link, so a page icon or a font fetched from a CDN is caught.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page

from tests.e2e.conftest import leaves_loopback

PAGES = ["", "run", "history", "review", "batch", "experiments", "models"]


@pytest.mark.parametrize(
    ("url", "outside"),
    [
        ("http://127.0.0.1:8501/_stcore/health", False),
        ("http://localhost:8501/run", False),
        ("data:image/svg+xml;base64,AAAA", False),
        ("https://fonts.gstatic.com/s/i/short-term/release/x/24px.svg", True),
        ("http://10.0.0.1/", True),
    ],
)
def test_leaves_loopback_tells_outside_hosts(url: str, outside: bool) -> None:
    assert leaves_loopback(url) is outside


def test_no_page_requests_an_outside_host(goto: Callable[[str], Page]) -> None:
    for path in PAGES:
        page = goto(path)
        page.wait_for_timeout(500)  # icons and fonts load after the first paint
        assert page.locator('[data-testid="stException"]').count() == 0, path
