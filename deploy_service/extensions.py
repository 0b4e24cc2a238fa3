"""Flask extensions, created unbound here and bound to an app in `create_app`.

Nothing in this module reads configuration or touches the database at import time.
"""

from __future__ import annotations

from typing import Any

import flask_smorest
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from deploy_service.schemas.common import ErrorSchema

# Stable constraint names, so Alembic can alter constraints on every backend (SQLite batch mode too).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Api(flask_smorest.Api):
    """flask-smorest's Api, documenting the contract's error body instead of smorest's default.

    No catch-all `default` response: each operation lists the statuses it can answer (its own, and
    those `api.openapi.ContractDocs` adds), so the fuzz suite's status-code check holds routes to them.
    """

    ERROR_SCHEMA = ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _register_error_handlers(self) -> Any:
        """Error handlers are installed by `deploy_service.errors`, not by smorest."""
        return None


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = Api()
jwt = JWTManager()
cors = CORS()
