"""Who acted, and reviewers' claims: identities on reviews, runs and batches, a claim table,
and the seats of a blind double review.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

Reviews record the signed-in identity (issuer, subject, e-mail) beside the name, their stage
(``single``, ``blind`` or ``admin``) and, for the two decisions of a blind double review, a
seat; runs and batches record who started them. Rows stored before have NULL identities and
read back as the stage ``single``. ``review_claim`` holds the lease a reviewer takes on a
waiting run. The audit trail becomes append-only in the database itself: a trigger refuses
any UPDATE or DELETE of a review row.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REVIEW_COLUMNS = ("reviewer_issuer", "reviewer_subject", "reviewer_email")
APPEND_ONLY = "the review audit trail is append-only"
SQLITE_TRIGGERS = {
    f"review_append_only_{verb.lower()}": (
        f"CREATE TRIGGER review_append_only_{verb.lower()} BEFORE {verb} ON review "
        f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
    )
    for verb in ("UPDATE", "DELETE")
}
PG_FUNCTION = (
    "CREATE OR REPLACE FUNCTION review_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    f"$$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$"
)
PG_TRIGGER = (
    "CREATE TRIGGER review_append_only BEFORE UPDATE OR DELETE ON review "
    "FOR EACH ROW EXECUTE FUNCTION review_append_only()"
)


# Plain ALTER TABLE: batch mode would rebuild ``run`` on SQLite and cascade-delete its calls.
def upgrade() -> None:
    op.add_column("run", sa.Column("submitted_by", sa.Text(), nullable=True))
    op.add_column("batch", sa.Column("submitted_by", sa.Text(), nullable=True))
    for name in REVIEW_COLUMNS:
        op.add_column("review", sa.Column(name, sa.String(), nullable=True))
    op.add_column(
        "review", sa.Column("stage", sa.String(), nullable=False, server_default="single")
    )
    op.add_column("review", sa.Column("seat", sa.Integer(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        for statement in SQLITE_TRIGGERS.values():
            op.execute(statement)
    op.create_table(
        "review_claim",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("seat", sa.Integer(), nullable=False),
        sa.Column("holder_issuer", sa.String(), nullable=False),
        sa.Column("holder_subject", sa.String(), nullable=False),
        sa.Column("holder_email", sa.String(), nullable=True),
        sa.Column("holder_name", sa.String(), nullable=False),
        sa.Column("claimed_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "seat"),
    )


def downgrade() -> None:
    op.drop_table("review_claim")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER review_append_only ON review")
        op.execute("DROP FUNCTION review_append_only()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    for name in ("seat", "stage", *reversed(REVIEW_COLUMNS)):
        op.drop_column("review", name)
    op.drop_column("batch", "submitted_by")
    op.drop_column("run", "submitted_by")
