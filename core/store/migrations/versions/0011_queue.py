"""The queue of team workers: pgqueuer's tables in their own schema, on PostgreSQL only.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

``tally worker`` processes take parts of batches from pgqueuer's queue (``core.jobs.queue``).
Its objects live in the ``tally_queue`` schema, apart from Tally's tables; SQLite stores have
no queue, so nothing changes there.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from core.jobs.queue import install_sql

    bind.exec_driver_sql(install_sql())


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from core.jobs.queue import QUEUE_SCHEMA, uninstall_sql

    bind.exec_driver_sql(uninstall_sql())
    bind.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{QUEUE_SCHEMA}"')
