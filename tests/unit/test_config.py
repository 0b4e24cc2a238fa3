"""Configuration from the environment, and the settings a service must refuse."""

from __future__ import annotations

from datetime import timedelta

import pytest

from deploy_service import create_app
from deploy_service.config import DEV_SECRET_KEY, load_config, normalize_database_url, validate_config
from deploy_service.errors import ConfigError


def test_defaults() -> None:
    config = load_config({})
    assert config["PORT"] == 5000
    assert config["HOST"] == "0.0.0.0"
    assert config["ENVIRONMENT"] == "development"
    assert config["DEBUG"] is False
    assert config["SQLALCHEMY_DATABASE_URI"] == "sqlite:///deploy_service.db"
    assert config["SECRET_KEY"] == DEV_SECRET_KEY
    assert config["ALLOWED_ORIGINS"] == []
    assert config["JWT_ACCESS_TOKEN_EXPIRES"] == timedelta(minutes=15)
    assert config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    assert config["ALLOW_LOCAL_GIT_SOURCES"] is False


def test_values_are_read_and_parsed() -> None:
    config = load_config(
        {
            "PORT": "8000",
            "DEBUG": "true",
            "ALLOWED_ORIGINS": "https://a.example, https://b.example ,",
            "DATABASE_URL": "postgres://u:p@db:5432/app",
            "AGENT_MAX_CPU": "2.5",
            "REGISTRATION_ENABLED": "no",
        }
    )
    assert config["PORT"] == 8000
    assert config["DEBUG"] is True
    assert config["ALLOWED_ORIGINS"] == ["https://a.example", "https://b.example"]
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u:p@db:5432/app"
    assert config["AGENT_MAX_CPU"] == 2.5
    assert config["REGISTRATION_ENABLED"] is False


@pytest.mark.parametrize(
    "env",
    [{"PORT": "http"}, {"PORT": "0"}, {"DEBUG": "maybe"}, {"ENVIRONMENT": "prod"}, {"AGENT_MAX_CPU": "lots"}],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        load_config(env)


def test_production_refuses_to_start_without_secret_key() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        validate_config(load_config({"ENVIRONMENT": "production"}))
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        validate_config(load_config({"ENVIRONMENT": "production", "SECRET_KEY": "short"}))
    validate_config(load_config({"ENVIRONMENT": "production", "SECRET_KEY": "x" * 40}))


def test_create_app_refuses_production_without_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})


def test_defaults_must_fit_maxima() -> None:
    with pytest.raises(ConfigError, match="AGENT_DEFAULT_CPU"):
        validate_config(load_config({"AGENT_DEFAULT_CPU": "8", "AGENT_MAX_CPU": "4"}))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://h/db", "postgresql+psycopg://h/db"),
        ("postgresql://h/db", "postgresql+psycopg://h/db"),
        ("postgresql+psycopg://h/db", "postgresql+psycopg://h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_urls_are_normalised(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


def test_bad_encryption_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="SECRETS_ENCRYPTION_KEYS"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRETS_ENCRYPTION_KEYS": ["not-a-key"]})
