"""Agent lists read their order from an index: (owner, created_at, id), and (created_at, id) for an admin's
list, so a page of `ORDER BY created_at DESC, id DESC` is read in order and cut at its limit instead of
sorting every matching row (with all its columns) first; as the deployments' lists since d9e8f7a6b5c4.

Revision ID: a7b8c9d0e1f2
Revises: d9e8f7a6b5c4
Create Date: 2026-12-03 18:40:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'a7b8c9d0e1f2'
down_revision = 'd9e8f7a6b5c4'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index('ix_agents_owner_id_created_at')
        batch_op.create_index('ix_agents_owner_id_created_at_id', ['owner_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_agents_created_at_id', ['created_at', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index('ix_agents_created_at_id')
        batch_op.drop_index('ix_agents_owner_id_created_at_id')
        batch_op.create_index('ix_agents_owner_id_created_at', ['owner_id', 'created_at'], unique=False)
