"""Reviews keep the reason of the decision they replaced.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Resolving a run overwrites its decision reason with the reviewer's; the review row now keeps
the panel's reason beside it. Reviews made before this migration have none (NULL).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("review") as batch:
        batch.add_column(sa.Column("previous_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("review") as batch:
        batch.drop_column("previous_reason")
