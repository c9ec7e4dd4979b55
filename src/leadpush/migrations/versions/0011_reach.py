"""reach: notification preferences and team quiet-hour defaults, delivery digests (folds, merged_into,
hold_reason) and attempts, follow-up plans on customers, the last subscribe answer per WeChat template

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 12:48:48.604132
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import leadpush.db


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('team_notification_defaults',
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('quiet_mode', sa.String(length=16), nullable=False),
    sa.Column('quiet_start', sa.String(length=5), nullable=True),
    sa.Column('quiet_end', sa.String(length=5), nullable=True),
    sa.Column('updated_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], name=op.f('fk_team_notification_defaults_team_id_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('team_id', name=op.f('pk_team_notification_defaults'))
    )
    op.create_table('notification_preferences',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('channels', sa.JSON(), nullable=True),
    sa.Column('quiet_mode', sa.String(length=16), nullable=False),
    sa.Column('quiet_start', sa.String(length=5), nullable=True),
    sa.Column('quiet_end', sa.String(length=5), nullable=True),
    sa.Column('urgent_override', sa.Boolean(), nullable=False),
    sa.Column('updated_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_notification_preferences_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_notification_preferences'))
    )
    op.create_table('delivery_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('started_at', leadpush.db.UTCDateTime(), nullable=True),
    sa.Column('finished_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('errcode', sa.Integer(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('worker', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_delivery_attempts_delivery_id_deliveries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_attempts'))
    )
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivery_attempts_delivery_id'), ['delivery_id'], unique=False)

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_follow_up_at', leadpush.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('next_follow_up_note', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('follow_up_remind_at', leadpush.db.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_customers_follow_up_remind_at'), ['follow_up_remind_at'], unique=False)

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('folds', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('merged_into', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('hold_reason', sa.String(length=200), nullable=True))

    with op.batch_alter_table('wechat_subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_result', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('last_result_at', leadpush.db.UTCDateTime(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('wechat_subscriptions', schema=None) as batch_op:
        batch_op.drop_column('last_result_at')
        batch_op.drop_column('last_result')

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('hold_reason')
        batch_op.drop_column('merged_into')
        batch_op.drop_column('folds')

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customers_follow_up_remind_at'))
        batch_op.drop_column('follow_up_remind_at')
        batch_op.drop_column('next_follow_up_note')
        batch_op.drop_column('next_follow_up_at')

    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivery_attempts_delivery_id'))

    op.drop_table('delivery_attempts')
    op.drop_table('notification_preferences')
    op.drop_table('team_notification_defaults')
