"""Agents may choose who their replicas run as: `agents.run_as_user` (`uid[:gid]`, never uid 0; null: the
image's numeric non-zero user, else CONTAINER_DEFAULT_UID:GID).

Revision ID: a054c9bccbb1
Revises: c2217214ab86
Create Date: 2026-12-02 02:03:11.198205

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a054c9bccbb1'
down_revision = 'c2217214ab86'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_as_user', sa.String(length=21), nullable=True))


def downgrade():
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('run_as_user')
