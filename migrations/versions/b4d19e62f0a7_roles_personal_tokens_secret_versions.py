"""Roles admin/developer/user, personal access tokens, and secret versions.

Every existing `user` account becomes `developer` (what `user` could do before: manage its own agents,
deployments, keys, secrets and webhooks); `user` now names the read-only role. `personal_tokens` holds
users' `dsp_` tokens by hash. `secrets.version` (1 for every stored secret) is raised by each rotation.
Downgrade maps `developer` back to `user` and refuses nothing: a read-only `user` becomes a full one again.

Revision ID: b4d19e62f0a7
Revises: e4f1a2b3c5d6
Create Date: 2026-12-03 12:00:00.000000

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = 'b4d19e62f0a7'
down_revision = 'e4f1a2b3c5d6'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("UPDATE users SET role = 'developer' WHERE role = 'user'")
    op.create_table('personal_tokens',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_personal_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_personal_tokens')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_personal_tokens_key_hash'))
    )
    with op.batch_alter_table('personal_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_personal_tokens_user_id_created_at', ['user_id', 'created_at'], unique=False)
    with op.batch_alter_table('secrets', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default=sa.text('1'), nullable=False))


def downgrade():
    with op.batch_alter_table('secrets', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('version')
    with op.batch_alter_table('personal_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_personal_tokens_user_id_created_at')
    op.drop_table('personal_tokens')
    op.execute("UPDATE users SET role = 'user' WHERE role = 'developer'")
