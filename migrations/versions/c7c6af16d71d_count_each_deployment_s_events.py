"""Count each deployment's events: `deployments.events_total`, kept by record_event, backfilled here;
and index events by deployment and type, for filtered events pages.

Revision ID: c7c6af16d71d
Revises: b5caa17ba15c
Create Date: 2026-11-25 14:15:38.669845

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c7c6af16d71d'
down_revision = 'b5caa17ba15c'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('events_total', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.execute(
        "UPDATE deployments SET events_total = "
        "(SELECT count(*) FROM deployment_events WHERE deployment_events.deployment_id = deployments.id)"
    )
    with op.batch_alter_table('deployment_events', schema=None) as batch_op:
        batch_op.create_index(
            'ix_deployment_events_deployment_id_event_type_created_at',
            ['deployment_id', 'event_type', 'created_at'],
            unique=False,
        )


def downgrade():
    with op.batch_alter_table('deployment_events', schema=None) as batch_op:
        batch_op.drop_index('ix_deployment_events_deployment_id_event_type_created_at')
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_column('events_total')
