"""Reading the reconciler's resource samples."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select

from deploy_service.extensions import db
from deploy_service.models import ContainerSample


def latest_samples(deployment_id: str, container_ids: Iterable[str]) -> dict[str, ContainerSample]:
    """The newest sample of each of the deployment's containers that has one, by container id."""
    wanted = list(container_ids)
    if not wanted:
        return {}
    newest = (
        select(func.max(ContainerSample.id))
        .where(ContainerSample.deployment_id == deployment_id, ContainerSample.container_id.in_(wanted))
        .group_by(ContainerSample.container_id)
    )
    rows = db.session.scalars(select(ContainerSample).where(ContainerSample.id.in_(newest)))
    return {sample.container_id: sample for sample in rows}
