"""pool claims: which pool each claim came from, for per-pool daily claim limits

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 10:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import leadpush.db


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('pool_claims',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pool_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('created_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_pool_claims_customer_id_customers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['pool_id'], ['pools.id'], name=op.f('fk_pool_claims_pool_id_pools'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_pool_claims_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pool_claims'))
    )
    op.create_index(op.f('ix_pool_claims_customer_id'), 'pool_claims', ['customer_id'], unique=False)
    op.create_index(op.f('ix_pool_claims_pool_id'), 'pool_claims', ['pool_id'], unique=False)
    op.create_index('ix_pool_claims_user_created', 'pool_claims', ['user_id', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_pool_claims_user_created', table_name='pool_claims')
    op.drop_index(op.f('ix_pool_claims_pool_id'), table_name='pool_claims')
    op.drop_index(op.f('ix_pool_claims_customer_id'), table_name='pool_claims')
    op.drop_table('pool_claims')
