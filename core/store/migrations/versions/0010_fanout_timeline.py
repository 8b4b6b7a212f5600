"""Calls and runs keep the moments of the fan-out timeline.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

A call keeps when it was queued (before it held its ceilings) and when each retry was decided,
and which request it went out in when several samples were drawn together (the request's first
slot); a run keeps when an early stop or a fastest answer cut the rest, and when it decided.
Rows stored before this migration have none of them (NULL, or no retries): their timelines
start at the call's start and show no marks.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, not a batch: a batch rebuilds the table on SQLite, and dropping ``run``
# would cascade to every call and review.
def call_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("queued_at", sa.Double(), nullable=True),
        sa.Column("retry_at", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("request_slot", sa.Integer(), nullable=True),
    ]


def run_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("stopped_at", sa.Double(), nullable=True),
        sa.Column("decided_at", sa.Double(), nullable=True),
    ]


def upgrade() -> None:
    for column in call_columns():
        op.add_column("call", column)
    for column in run_columns():
        op.add_column("run", column)


def downgrade() -> None:
    for column in reversed(run_columns()):
        op.drop_column("run", column.name)
    for column in reversed(call_columns()):
        op.drop_column("call", column.name)
