"""lead fields and pools: customers.region, tags, pool_id, pooled_at; pools and pool_members

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00.000000

A lead with no owner is in a pool: `pool_id` NULL is the company-wide pool (公海) as before, so every
existing lead stays where it was. `pooled_at` (since when a lead is in its pool) starts as the last
change of the pooled leads.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import leadpush.db


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('pools',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('team', sa.String(length=64), nullable=True),
    sa.Column('claim_daily_limit', sa.Integer(), nullable=True),
    sa.Column('cooldown_hours', sa.Float(), nullable=True),
    sa.Column('embargo_minutes', sa.Integer(), nullable=False),
    sa.Column('hide_phone', sa.Boolean(), nullable=False),
    sa.Column('created_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['team'], ['teams.name'], name=op.f('fk_pools_team_teams'), onupdate='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pools')),
    sa.UniqueConstraint('name', name=op.f('uq_pools_name'))
    )
    op.create_table('pool_members',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], name=op.f('fk_pool_members_pool_id_pools'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_pool_members_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pool_members')),
    sa.UniqueConstraint('pool_id', 'user_id', name=op.f('uq_pool_members_pool_id'))
    )
    op.create_index(op.f('ix_pool_members_pool_id'), 'pool_members', ['pool_id'], unique=False)
    op.create_index(op.f('ix_pool_members_user_id'), 'pool_members', ['user_id'], unique=False)
    op.add_column('customers', sa.Column('region', sa.String(length=64), server_default='', nullable=False))
    op.add_column('customers', sa.Column('tags', sa.JSON(), server_default='[]', nullable=False))
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite adds a column with its reference in one statement (no ALTER of constraints).
        op.execute(
            'ALTER TABLE customers ADD COLUMN pool_id INTEGER'
            ' CONSTRAINT fk_customers_pool_id_pools REFERENCES pools (id) ON DELETE SET NULL'
        )
    else:
        op.add_column('customers', sa.Column('pool_id', sa.Integer(), nullable=True))
        op.create_foreign_key(
            op.f('fk_customers_pool_id_pools'), 'customers', 'pools', ['pool_id'], ['id'], ondelete='SET NULL'
        )
    op.add_column('customers', sa.Column('pooled_at', leadpush.db.UTCDateTime(), nullable=True))
    op.create_index(op.f('ix_customers_pool_id'), 'customers', ['pool_id'], unique=False)
    op.execute("UPDATE customers SET pooled_at = updated_at WHERE owner_id IS NULL")


def downgrade() -> None:
    op.drop_index(op.f('ix_customers_pool_id'), table_name='customers')
    with op.batch_alter_table('customers') as batch:
        batch.drop_column('pooled_at')
        batch.drop_column('pool_id')
        batch.drop_column('tags')
        batch.drop_column('region')
    op.drop_index(op.f('ix_pool_members_user_id'), table_name='pool_members')
    op.drop_index(op.f('ix_pool_members_pool_id'), table_name='pool_members')
    op.drop_table('pool_members')
    op.drop_table('pools')
