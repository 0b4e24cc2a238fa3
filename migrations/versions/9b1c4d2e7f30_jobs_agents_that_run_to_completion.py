"""Jobs: agents that run to completion. `agents.kind`, `agents.restart_policy`, `agents.timeout_seconds`.

Every existing agent is a service that restarts always (the server defaults), which is what it did before.
Deployment and instance statuses are strings, so `succeeded` (and an instance's `failed`) need no change.
Added in place (never a copy of the table, whose drop would cascade to the deployments).

Revision ID: 9b1c4d2e7f30
Revises: 5e0a7b3c91d4
Create Date: 2026-12-03 06:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '9b1c4d2e7f30'
down_revision = '5e0a7b3c91d4'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agents', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default=sa.text("'service'"), nullable=False))
        batch_op.add_column(
            sa.Column('restart_policy', sa.String(length=16), server_default=sa.text("'always'"), nullable=False)
        )
        batch_op.add_column(sa.Column('timeout_seconds', sa.Float(), nullable=True))


def downgrade():
    with op.batch_alter_table('agents', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('timeout_seconds')
        batch_op.drop_column('restart_policy')
        batch_op.drop_column('kind')
