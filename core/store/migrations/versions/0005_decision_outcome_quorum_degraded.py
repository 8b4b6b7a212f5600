"""Runs keep the vote's own outcome, the quorum it was taken under and how it was degraded.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

A threshold not met and a quorum failure are both ``failed``, but only the first is open to
the tie-break chain; the outcome column says which. The quorum and the degradation (planned
and counted calls, and why) are shown on every decision, in History too. Runs stored before
this migration have none of the three (NULL): their decisions read back as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, not a batch: a batch rebuilds ``run`` on SQLite, and dropping the old
# table would cascade to every call and review of every run.
def columns() -> list[sa.Column[object]]:
    return [
        sa.Column("outcome", sa.String(), nullable=True),
        sa.Column("quorum_json", sa.Text(), nullable=True),
        sa.Column("degraded_json", sa.Text(), nullable=True),
    ]


def upgrade() -> None:
    for column in columns():
        op.add_column("run", column)


def downgrade() -> None:
    for column in reversed(columns()):
        op.drop_column("run", column.name)
