"""audit_record: (user_id, action, event_code, event_time) index replaces the user_id index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 07:40:00
"""

from __future__ import annotations

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_record') as batch:
        batch.drop_index('ix_audit_record_user_id')
        batch.create_index('ix_audit_record_user_kind_time',
                           ['user_id', 'action', 'event_code', 'event_time'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_record') as batch:
        batch.drop_index('ix_audit_record_user_kind_time')
        batch.create_index('ix_audit_record_user_id', ['user_id'], unique=False)
