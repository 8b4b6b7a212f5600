"""Runs keep their decision's confidence: the posterior probability that the winner is right.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

The Beta posterior of the winner against the runner-up, or the Dawid–Skene posterior of a
learned re-vote; the ``escalate-below`` trigger of the tie-break chain reads it. Runs stored
before this migration have none (NULL): their decisions read back without a confidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, not a batch: a batch rebuilds ``run`` on SQLite, and dropping the old
# table would cascade to every call and review of every run.
def upgrade() -> None:
    op.add_column("run", sa.Column("confidence", sa.Double(), nullable=True))


def downgrade() -> None:
    op.drop_column("run", "confidence")
