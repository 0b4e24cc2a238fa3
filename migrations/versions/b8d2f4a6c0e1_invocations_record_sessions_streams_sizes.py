"""Invocations record more of each call: `session_id`, `streamed`, `first_byte_ms`, `request_bytes`,
`response_bytes` and `error`; and an index on `created_at` for the retention prune.

Existing rows were plain JSON calls: `streamed` false (server default), the rest unknown (null). Added in
place (`recreate='never'`), as every column is nullable or has a server default.

Revision ID: b8d2f4a6c0e1
Revises: 9b1c4d2e7f30
Create Date: 2026-12-03 06:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b8d2f4a6c0e1'
down_revision = '9b1c4d2e7f30'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('invocations', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('session_id', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('streamed', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('first_byte_ms', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('request_bytes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('response_bytes', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('error', sa.String(length=500), nullable=True))
    op.create_index('ix_invocations_created_at', 'invocations', ['created_at'], unique=False)


def downgrade():
    op.drop_index('ix_invocations_created_at', table_name='invocations')
    with op.batch_alter_table('invocations', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('error')
        batch_op.drop_column('response_bytes')
        batch_op.drop_column('request_bytes')
        batch_op.drop_column('first_byte_ms')
        batch_op.drop_column('streamed')
        batch_op.drop_column('session_id')
