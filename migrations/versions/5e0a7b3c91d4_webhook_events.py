"""Webhooks choose their events: `webhooks.events`, the event names a webhook gets.

Every webhook there was got alerts (raised and resolved) only: the server default gives each existing row
exactly those, so it keeps getting what it got, and nothing of the new release and deployment events.
Added in place (never a copy of the table, whose drop would cascade to the delivery log).

Revision ID: 5e0a7b3c91d4
Revises: a7e3c1d9b4f2
Create Date: 2026-12-03 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '5e0a7b3c91d4'
down_revision = 'a7e3c1d9b4f2'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('webhooks', schema=None, recreate='never') as batch_op:
        batch_op.add_column(
            sa.Column(
                'events',
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
                server_default=sa.text('\'["alert.raised", "alert.resolved"]\''),
                nullable=False,
            )
        )


def downgrade():
    with op.batch_alter_table('webhooks', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('events')
