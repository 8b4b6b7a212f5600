"""A batch has an owner and a lease, so a resume never runs it twice at once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

The process that runs a batch claims it (host, pid, a token unique to the claim, since when)
and renews a lease while it runs; see ``core.store.lease``. Batches stored before have no
owner: the first claim takes them, as a resume did before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS: tuple[tuple[str, Any], ...] = (
    ("owner_host", sa.String()),
    ("owner_pid", sa.Integer()),
    ("owner_token", sa.String()),
    ("owner_since", sa.Double()),
    ("lease_until", sa.Double()),
)


# Plain ALTER TABLE, not batch mode: rebuilding ``batch`` on SQLite would cascade-delete
# its items.
def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("batch", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    for name, _ in reversed(COLUMNS):
        op.drop_column("batch", name)
