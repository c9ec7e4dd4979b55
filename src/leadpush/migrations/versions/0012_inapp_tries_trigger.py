"""in-app tries by trigger (SQLite): an in-app delivery inserted as sent gets its one try with it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 02:40:00.000000

The process that commits a notification pushes it to the recipient's sockets, so the ledger writes its in-app
delivery as sent, with one `delivery_attempts` row (leadpush.notify.ledger). On PostgreSQL the ledger's one
statement inserts that row (a data-modifying CTE). SQLite has no such CTE and a statement inserts into one table
only: this trigger writes the row as part of the deliveries' INSERT, instead of a statement of its own under
the write lock. The row is the one that statement wrote: attempt 1, started and finished at the delivery's
`sent_at` (the very text), outcome and status `sent`, the detail the history shows
(ledger.PUSHED_AT_COMMIT; a test pins that the two agree). Only leadpush's ledger inserts an in-app delivery
already sent; every other path inserts pending (or skipped) rows and records its tries itself.

Careful: SQLite drops a table's triggers with the table. A later migration that rebuilds `deliveries` (Alembic's
batch mode "move and copy") must create this trigger again.
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER = 'deliveries_inapp_sent_try'

CREATE = f"""
CREATE TRIGGER {TRIGGER} AFTER INSERT ON deliveries
WHEN NEW.channel = 'inapp' AND NEW.status = 'sent'
BEGIN
  INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at, outcome, status, detail)
  VALUES (NEW.id, 1, NEW.sent_at, NEW.sent_at, 'sent', 'sent', '提交时已推送到站内连接');
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        op.execute(CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        op.execute(f'DROP TRIGGER IF EXISTS {TRIGGER}')
