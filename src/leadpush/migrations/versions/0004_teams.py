"""teams: a teams table; users.team and transfer_rules.team become foreign keys to teams.name

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 06:40:00.000000

The teams are made from the distinct free-text names already in users and transfer rules. The `team`
columns keep holding names (the API speaks names) and follow a rename (ON UPDATE CASCADE).

SQLite cannot add a constraint to an existing column, and rebuilding `users` (Alembic's batch mode) is
unsafe with foreign_keys=ON inside the migration's transaction: dropping the old table would cascade to
api_tokens. So on SQLite each column is swapped for a new one that carries the constraint (ADD COLUMN
... REFERENCES, copy, DROP COLUMN, RENAME COLUMN), which rewrites no other table.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import leadpush.db


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, foreign key name, index on the column or None)
COLUMNS = (
    ('users', 'fk_users_team_teams', 'ix_users_team'),
    ('transfer_rules', 'fk_transfer_rules_team_teams', None),
)


def upgrade() -> None:
    op.create_table('teams',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('created_at', leadpush.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_teams')),
    sa.UniqueConstraint('name', name=op.f('uq_teams_name'))
    )
    # Naive UTC, as leadpush.db.UTCDateTime stores it (CURRENT_TIMESTAMP would be the server's zone on PostgreSQL).
    now = datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')
    stamp = ':now' if op.get_bind().dialect.name == 'sqlite' else 'CAST(:now AS TIMESTAMP)'
    op.get_bind().execute(sa.text(
        f"INSERT INTO teams (name, created_at) SELECT name, {stamp} FROM ("
        " SELECT team AS name FROM users WHERE team IS NOT NULL"
        " UNION SELECT team AS name FROM transfer_rules WHERE team IS NOT NULL"
        ") AS names ORDER BY name"
    ), {"now": now})
    if op.get_bind().dialect.name == 'sqlite':
        for table, fk, index in COLUMNS:
            _swap_column_sqlite(table, index, f'CONSTRAINT {fk} REFERENCES teams (name) ON UPDATE CASCADE')
    else:
        for table, fk, _index in COLUMNS:
            op.create_foreign_key(fk, table, 'teams', ['team'], ['name'], onupdate='CASCADE')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        for table, _fk, index in COLUMNS:
            _swap_column_sqlite(table, index, '')
    else:
        for table, fk, _index in COLUMNS:
            op.drop_constraint(fk, table, type_='foreignkey')
    op.drop_table('teams')


def _swap_column_sqlite(table: str, index: str | None, constraint: str) -> None:
    """Replace `table.team` by a column of the same type with `constraint` (or none), keeping the data."""
    op.execute(f'ALTER TABLE {table} ADD COLUMN team_new VARCHAR(64) {constraint}')
    op.execute(f'UPDATE {table} SET team_new = team')
    if index:
        op.execute(f'DROP INDEX {index}')
    op.execute(f'ALTER TABLE {table} DROP COLUMN team')
    op.execute(f'ALTER TABLE {table} RENAME COLUMN team_new TO team')
    if index:
        op.execute(f'CREATE INDEX {index} ON {table} (team)')
