"""The jobs tests run on SQLite and PostgreSQL, with the store tests' fixtures."""

from __future__ import annotations

from tests.core.store.conftest import (  # noqa: F401  (fixtures)
    anyio_backend,
    pg_databases,
    pg_store_url,
    store,
    store_url,
)
