"""Generations are never used twice: `deployments.latest_generation`, the highest generation ever rolled out.

An automatic rollback sets `generation` back to the one that still serves; a restart goes past
`latest_generation`, so the failed generation's number (and its replicas' names) is never used again.
Backfilled from what the database remembers of each deployment's generations: its own, its replica slots'
and the kept logs of its removed replicas (a rollback before this revision may have left a higher one
only on the engine; its replicas are removed by the reconciler, as before).

Revision ID: 9c41d7e2b5a8
Revises: f3f4346ce3d3
Create Date: 2026-12-02 08:58:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '9c41d7e2b5a8'
down_revision = 'f3f4346ce3d3'
branch_labels = None
depends_on = None


def upgrade():
    # Never a copy of the table (batch mode's way on SQLite for a column with a default): dropping the old
    # `deployments` would cascade to every row that references it (releases, instances, events). SQLite adds
    # and drops a plain column in place.
    with op.batch_alter_table('deployments', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('latest_generation', sa.Integer(), server_default=sa.text('1'), nullable=False))
    op.execute("UPDATE deployments SET latest_generation = generation")
    for table in ('deployment_instances', 'replica_logs'):
        highest = f"(SELECT max(generation) FROM {table} WHERE {table}.deployment_id = deployments.id)"
        op.execute(f"UPDATE deployments SET latest_generation = {highest} WHERE {highest} > latest_generation")


def downgrade():
    with op.batch_alter_table('deployments', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('latest_generation')
