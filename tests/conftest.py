"""Suite-wide ordering: the browser tests run last.

Playwright's sync API leaves an event loop marked as running in the main thread even after it
stops, so any test after it that starts a loop of its own (AppTest pages, ``anyio.run``) would
fail. ``make test`` runs the two suites as separate invocations; this keeps a plain ``pytest``
correct too.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
