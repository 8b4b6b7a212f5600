"""Calls keep their cached prompt tokens and the known part of an unknown cost; runs too.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

A call's usage is now summed over its attempts, and a call cut without a usage report has an
unknown cost (NULL) whose known part is kept beside it; a run counts its calls of unknown
cost. Rows written before have no known part (NULL) and no count (0): they read as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, not batch mode: a batch on SQLite rebuilds the table, and rebuilding
# ``run`` would cascade-delete its calls and reviews.
def upgrade() -> None:
    op.add_column("call", sa.Column("tokens_cached", sa.Integer(), nullable=True))
    op.add_column("call", sa.Column("cost_known_usd", sa.Double(), nullable=True))
    op.add_column("run", sa.Column("cost_known_usd", sa.Double(), nullable=True))
    op.add_column(
        "run", sa.Column("cost_unknown_calls", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("run", "cost_unknown_calls")
    op.drop_column("run", "cost_known_usd")
    op.drop_column("call", "cost_known_usd")
    op.drop_column("call", "tokens_cached")
