"""Index deployment events by time and id: the event feed (`GET /v1/events`) pages newest first by keyset.

Revision ID: e4f1a2b3c5d6
Revises: b8d2f4a6c0e1
Create Date: 2026-12-03 07:05:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'e4f1a2b3c5d6'
down_revision = 'b8d2f4a6c0e1'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('deployment_events', schema=None) as batch_op:
        batch_op.create_index('ix_deployment_events_created_at_id', ['created_at', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('deployment_events', schema=None) as batch_op:
        batch_op.drop_index('ix_deployment_events_created_at_id')
