"""audit_rate_bucket: per-principal instance counts in 10 s buckets for the bulk-retrieval rule

The table is derived from ``audit_record``; the upgrade fills it from the
retrieve records of the last 7 days (the longest window the rule reads from
buckets), so the rule's bound holds from the first append after the upgrade.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 13:40:00
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from dicomvault.index.base import UtcDateTime

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# Fixed here as they were when this revision was written (audit.alerts may change later).
_BUCKET_SECONDS = 10
_HORIZON = timedelta(days=7)
_BULK = (("110104", "R"), ("110106", "R"), ("110106", "E"))


def upgrade() -> None:
    buckets = op.create_table(
        'audit_rate_bucket',
        sa.Column('rule', sa.String(length=32), nullable=False),
        sa.Column('subject', sa.String(length=256), nullable=False),
        sa.Column('bucket', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('total', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('rule', 'subject', 'bucket'),
    )
    records = sa.table('audit_record', sa.column('user_id', sa.String()), sa.column('event_time', UtcDateTime()),
                       sa.column('event_code', sa.String()), sa.column('action', sa.String()),
                       sa.column('outcome', sa.Integer()), sa.column('instance_count', sa.Integer()))
    since = datetime.now(UTC) - _HORIZON
    query = sa.select(records.c.user_id, records.c.event_time, records.c.instance_count).where(
        records.c.user_id.is_not(None), records.c.outcome == 0, records.c.event_time > since,
        sa.or_(*[(records.c.event_code == c) & (records.c.action == a) for c, a in _BULK]))
    totals: Counter[tuple[str, int]] = Counter()
    for user_id, event_time, count in op.get_bind().execute(query):
        totals[(user_id, int(event_time.timestamp()) // _BUCKET_SECONDS)] += count or 0
    if totals:
        op.bulk_insert(buckets, [{"rule": "bulk_retrieval", "subject": user, "bucket": bucket, "total": total}
                                 for (user, bucket), total in totals.items()])


def downgrade() -> None:
    op.drop_table('audit_rate_bucket')
