"""Why a deployment's image could not be prepared: `deployments.image_error`, read by the planner.

The preparer records the failure here instead of failing the deployment itself; the planning step then
decides: a rolling update whose previous release still serves is rolled back, anything else fails as
before.

Revision ID: a7e3c1d9b4f2
Revises: 9c41d7e2b5a8
Create Date: 2026-12-02 15:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a7e3c1d9b4f2'
down_revision = '9c41d7e2b5a8'
branch_labels = None
depends_on = None


def upgrade():
    # In place (never a copy of the table: on SQLite dropping the old `deployments` would cascade).
    with op.batch_alter_table('deployments', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('image_error', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('deployments', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('image_error')
