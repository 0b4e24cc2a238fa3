"""Agents may pull from private registries: `agents.registry_auth` (`{username, password_secret, registry}`, the
password by the name of one of the owner's secrets; null: anonymous pulls and builds).

Revision ID: 5d3c1a9e7f20
Revises: bd7d3200382f
Create Date: 2026-12-10 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '5d3c1a9e7f20'
down_revision = 'bd7d3200382f'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                'registry_auth',
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
                nullable=True,
            )
        )


def downgrade():
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('registry_auth')
