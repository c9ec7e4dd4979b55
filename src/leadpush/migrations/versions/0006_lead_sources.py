"""lead sources: lead_sources, lead_intake_merges; customers.external_id, intake_source_id, duplicate_of_id

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 10:10:00.000000

Lead intake is idempotent by (source, externalId): a unique index on customers (intake_source_id,
external_id) (NULLs never collide, so leads from elsewhere are unaffected), and one on the merges intake
recorded instead of creating a lead.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import leadpush.db


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('lead_sources',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('field_mapping', sa.JSON(), nullable=False),
    sa.Column('duplicate_policy', sa.String(length=16), nullable=False),
    sa.Column('default_region', sa.String(length=64), nullable=False),
    sa.Column('default_tags', sa.JSON(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('token_prefix', sa.String(length=12), nullable=False),
    sa.Column('signing_secret', sa.String(length=100), nullable=False),
    sa.Column('created_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.Column('rotated_at', leadpush.db.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lead_sources')),
    sa.UniqueConstraint('key', name=op.f('uq_lead_sources_key')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_lead_sources_token_hash'))
    )
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite adds a column with its reference in one statement (no ALTER of constraints).
        op.execute(
            'ALTER TABLE customers ADD COLUMN intake_source_id INTEGER'
            ' CONSTRAINT fk_customers_intake_source_id_lead_sources REFERENCES lead_sources (id) ON DELETE SET NULL'
        )
        op.execute(
            'ALTER TABLE customers ADD COLUMN duplicate_of_id INTEGER'
            ' CONSTRAINT fk_customers_duplicate_of_id_customers REFERENCES customers (id) ON DELETE SET NULL'
        )
    else:
        op.add_column('customers', sa.Column('intake_source_id', sa.Integer(), nullable=True))
        op.add_column('customers', sa.Column('duplicate_of_id', sa.Integer(), nullable=True))
        op.create_foreign_key(
            op.f('fk_customers_intake_source_id_lead_sources'), 'customers', 'lead_sources',
            ['intake_source_id'], ['id'], ondelete='SET NULL'
        )
        op.create_foreign_key(
            op.f('fk_customers_duplicate_of_id_customers'), 'customers', 'customers',
            ['duplicate_of_id'], ['id'], ondelete='SET NULL'
        )
    op.add_column('customers', sa.Column('external_id', sa.String(length=128), nullable=True))
    op.create_index(
        'uq_customers_intake_source_external', 'customers', ['intake_source_id', 'external_id'], unique=True
    )
    op.create_table('lead_intake_merges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('created_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_lead_intake_merges_customer_id_customers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['source_id'], ['lead_sources.id'], name=op.f('fk_lead_intake_merges_source_id_lead_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lead_intake_merges'))
    )
    op.create_index(op.f('ix_lead_intake_merges_customer_id'), 'lead_intake_merges', ['customer_id'], unique=False)
    op.create_index(
        'uq_lead_intake_merges_source_external', 'lead_intake_merges', ['source_id', 'external_id'], unique=True
    )


def downgrade() -> None:
    op.drop_index('uq_lead_intake_merges_source_external', table_name='lead_intake_merges')
    op.drop_index(op.f('ix_lead_intake_merges_customer_id'), table_name='lead_intake_merges')
    op.drop_table('lead_intake_merges')
    op.drop_index('uq_customers_intake_source_external', table_name='customers')
    with op.batch_alter_table('customers') as batch:
        batch.drop_column('external_id')
        batch.drop_column('duplicate_of_id')
        batch.drop_column('intake_source_id')
    op.drop_table('lead_sources')
