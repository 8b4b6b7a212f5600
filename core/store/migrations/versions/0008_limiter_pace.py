"""The rate-limit pace every worker of a team shares (``core.limits``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

One row per provider: the seconds between request starts its headers ask for, the next
start claimed and a hold after a spent bucket, all on the database server's clock. The
ceilings need no table: they are advisory locks, gone with the session that held them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "limiter_pace",
        sa.Column("provider", sa.String(), primary_key=True),
        sa.Column("interval_s", sa.Double(), nullable=False),
        sa.Column("next_start", sa.Double(), nullable=False),
        sa.Column("blocked_until", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("limiter_pace")
