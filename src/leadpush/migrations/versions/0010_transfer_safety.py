"""transfer safety: a rule's grace period (transfer_rules.grace_from, grace_until); transfer_backoffs

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 10:05:00.000000

A lead the automatic transfer could not move gets a row in transfer_backoffs: its next try, doubling
after each failure, instead of a retry every ten minutes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import leadpush.db


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('transfer_backoffs',
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('assigned_at', leadpush.db.UTCDateTime(), nullable=True),
    sa.Column('rule_id', sa.Integer(), nullable=True),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('first_failed_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.Column('retry_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_transfer_backoffs_customer_id_customers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_transfer_backoffs'))
    )
    op.create_index(op.f('ix_transfer_backoffs_rule_id'), 'transfer_backoffs', ['rule_id'], unique=False)
    op.add_column('transfer_rules', sa.Column('grace_from', leadpush.db.UTCDateTime(), nullable=True))
    op.add_column('transfer_rules', sa.Column('grace_until', leadpush.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('transfer_rules') as batch:
        batch.drop_column('grace_until')
        batch.drop_column('grace_from')
    op.drop_index(op.f('ix_transfer_backoffs_rule_id'), table_name='transfer_backoffs')
    op.drop_table('transfer_backoffs')
