"""first-contact SLA: sla_rules; the ladder's state on customers; opening and first follow-up on assignments

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:10:00.000000

Existing leads get no ladder (sla_next_at NULL) and no opening time: the measurement starts with the
next assignment.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import leadpush.db


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sla_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('team', sa.String(length=64), nullable=True),
    sa.Column('sources', sa.JSON(), nullable=False),
    sa.Column('remind_after_minutes', sa.Integer(), nullable=True),
    sa.Column('manager_after_minutes', sa.Integer(), nullable=True),
    sa.Column('reassign_after_minutes', sa.Integer(), nullable=True),
    sa.Column('reassign_action', sa.String(length=8), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['team'], ['teams.name'], name=op.f('fk_sla_rules_team_teams'), onupdate='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sla_rules'))
    )
    op.add_column('customers', sa.Column('sla_rule_id', sa.Integer(), nullable=True))
    op.add_column('customers', sa.Column('sla_stage', sa.Integer(), server_default='0', nullable=False))
    op.add_column('customers', sa.Column('sla_next_at', leadpush.db.UTCDateTime(), nullable=True))
    op.add_column('customers', sa.Column('opened_at', leadpush.db.UTCDateTime(), nullable=True))
    op.create_index(op.f('ix_customers_sla_next_at'), 'customers', ['sla_next_at'], unique=False)
    op.add_column('assignments', sa.Column('opened_at', leadpush.db.UTCDateTime(), nullable=True))
    op.add_column('assignments', sa.Column('first_follow_up_at', leadpush.db.UTCDateTime(), nullable=True))
    op.add_column('assignments', sa.Column('open_due_at', leadpush.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('assignments') as batch:
        batch.drop_column('open_due_at')
        batch.drop_column('first_follow_up_at')
        batch.drop_column('opened_at')
    op.drop_index(op.f('ix_customers_sla_next_at'), table_name='customers')
    with op.batch_alter_table('customers') as batch:
        batch.drop_column('opened_at')
        batch.drop_column('sla_next_at')
        batch.drop_column('sla_stage')
        batch.drop_column('sla_rule_id')
    op.drop_table('sla_rules')
