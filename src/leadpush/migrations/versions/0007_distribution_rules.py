"""distribution rules: distribution_rules, distribution_members, user_availability

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:10:00.000000

Routing of new, released and recycled leads (see leadpush.routing): rules in evaluation order with their
rotation state, the people a rule rotates among with their weights, and when each person takes leads.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import leadpush.db


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('distribution_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('team', sa.String(length=64), nullable=True),
    sa.Column('sources', sa.JSON(), nullable=False),
    sa.Column('regions', sa.JSON(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('applies_on', sa.JSON(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('target_user_id', sa.Integer(), nullable=True),
    sa.Column('target_pool_id', sa.Integer(), nullable=True),
    sa.Column('fallback', sa.String(length=8), nullable=False),
    sa.Column('fallback_user_id', sa.Integer(), nullable=True),
    sa.Column('fallback_pool_id', sa.Integer(), nullable=True),
    sa.Column('cursor_user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['team'], ['teams.name'], name=op.f('fk_distribution_rules_team_teams'), onupdate='CASCADE'),
    sa.ForeignKeyConstraint(['target_user_id'], ['users.id'], name=op.f('fk_distribution_rules_target_user_id_users')),
    sa.ForeignKeyConstraint(['target_pool_id'], ['pools.id'], name=op.f('fk_distribution_rules_target_pool_id_pools'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['fallback_user_id'], ['users.id'], name=op.f('fk_distribution_rules_fallback_user_id_users')),
    sa.ForeignKeyConstraint(['fallback_pool_id'], ['pools.id'], name=op.f('fk_distribution_rules_fallback_pool_id_pools'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_distribution_rules'))
    )
    op.create_index(op.f('ix_distribution_rules_position'), 'distribution_rules', ['position'], unique=False)
    op.create_table('distribution_members',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rule_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('weight', sa.Integer(), nullable=False),
    sa.Column('current_weight', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['rule_id'], ['distribution_rules.id'], name=op.f('fk_distribution_members_rule_id_distribution_rules'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_distribution_members_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_distribution_members')),
    sa.UniqueConstraint('rule_id', 'user_id', name=op.f('uq_distribution_members_rule_id'))
    )
    op.create_index(op.f('ix_distribution_members_rule_id'), 'distribution_members', ['rule_id'], unique=False)
    op.create_index(op.f('ix_distribution_members_user_id'), 'distribution_members', ['user_id'], unique=False)
    op.create_table('user_availability',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('working_hours', sa.JSON(), nullable=True),
    sa.Column('leave_from', leadpush.db.UTCDateTime(), nullable=True),
    sa.Column('leave_until', leadpush.db.UTCDateTime(), nullable=True),
    sa.Column('updated_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_availability_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_user_availability'))
    )


def downgrade() -> None:
    op.drop_table('user_availability')
    op.drop_index(op.f('ix_distribution_members_user_id'), table_name='distribution_members')
    op.drop_index(op.f('ix_distribution_members_rule_id'), table_name='distribution_members')
    op.drop_table('distribution_members')
    op.drop_index(op.f('ix_distribution_rules_position'), table_name='distribution_rules')
    op.drop_table('distribution_rules')
