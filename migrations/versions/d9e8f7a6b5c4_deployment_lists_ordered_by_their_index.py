"""Deployment lists read their order from an index: (owner, created_at, id), (agent, created_at, id) and
(created_at, id) for an admin's list, so a page of `ORDER BY created_at DESC, id DESC` is read in order and
cut at its limit instead of sorting every matching row (with all its columns) first.

Revision ID: d9e8f7a6b5c4
Revises: c3a9e5f17b42
Create Date: 2026-12-03 14:15:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'd9e8f7a6b5c4'
down_revision = 'c3a9e5f17b42'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_index('ix_deployments_owner_id_created_at')
        batch_op.drop_index('ix_deployments_agent_id_created_at')
        batch_op.create_index('ix_deployments_owner_id_created_at_id', ['owner_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_deployments_agent_id_created_at_id', ['agent_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_deployments_created_at_id', ['created_at', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_index('ix_deployments_created_at_id')
        batch_op.drop_index('ix_deployments_agent_id_created_at_id')
        batch_op.drop_index('ix_deployments_owner_id_created_at_id')
        batch_op.create_index('ix_deployments_agent_id_created_at', ['agent_id', 'created_at'], unique=False)
        batch_op.create_index('ix_deployments_owner_id_created_at', ['owner_id', 'created_at'], unique=False)
