"""The reconciler's heartbeat keeps how long its last recorded pass took: `reconciler_heartbeat.last_pass_seconds`
(for `GET /v1/system/status`; null until a pass records it).

Revision ID: c3a9e5f17b42
Revises: b4d19e62f0a7
Create Date: 2026-12-03 08:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c3a9e5f17b42'
down_revision = 'b4d19e62f0a7'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('reconciler_heartbeat', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_pass_seconds', sa.Float(), nullable=True))


def downgrade():
    with op.batch_alter_table('reconciler_heartbeat', schema=None) as batch_op:
        batch_op.drop_column('last_pass_seconds')
