"""Password hashing (Argon2id) and encryption of secret values at rest (Fernet).

Both are configured per application: hashing cost from `PASSWORD_HASH_*`, encryption keys from
`SECRETS_ENCRYPTION_KEYS` (comma-separated Fernet keys, the first encrypts, all decrypt, so keys can
be rotated) or, when unset, one key derived from `SECRET_KEY` with HKDF.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Flask, current_app

from deploy_service.errors import ConfigError

_EXTENSION_KEY = "deploy_service.security"


@dataclass(frozen=True)
class Security:
    """The per-app password hasher and secret cipher."""

    hasher: PasswordHasher
    cipher: MultiFernet
    dummy_hash: str


def _derive_fernet_key(secret_key: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"deploy-service secrets v1")
    return base64.urlsafe_b64encode(hkdf.derive(secret_key.encode()))


def init_security(app: Flask) -> None:
    """Build the hasher and cipher from the app's config.

    Raises:
        ConfigError: a key in SECRETS_ENCRYPTION_KEYS is not a valid Fernet key.
    """
    hasher = PasswordHasher(
        time_cost=app.config["PASSWORD_HASH_TIME_COST"],
        memory_cost=app.config["PASSWORD_HASH_MEMORY_KIB"],
        parallelism=1,
    )
    keys = app.config.get("SECRETS_ENCRYPTION_KEYS") or [_derive_fernet_key(str(app.config["SECRET_KEY"]))]
    try:
        cipher = MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ConfigError("SECRETS_ENCRYPTION_KEYS must hold Fernet keys (32 url-safe base64 bytes)") from exc
    app.extensions[_EXTENSION_KEY] = Security(hasher, cipher, hasher.hash("timing-equaliser"))


def _security() -> Security:
    security: Security = current_app.extensions[_EXTENSION_KEY]
    return security


def hash_password(password: str) -> str:
    """A salted Argon2id hash of `password`."""
    return _security().hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; with no hash, spends the same time and answers False."""
    security = _security()
    try:
        return security.hasher.verify(password_hash or security.dummy_hash, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with other parameters than the configured ones."""
    return _security().hasher.check_needs_rehash(password_hash)


def encrypt_secret(value: str) -> bytes:
    """Encrypt a secret value for storage."""
    return _security().cipher.encrypt(value.encode("utf-8"))


def decrypt_secret(ciphertext: bytes) -> str:
    """Decrypt a stored secret value.

    Raises:
        ConfigError: no configured key decrypts it (the keys were changed without rotation).
    """
    try:
        return _security().cipher.decrypt(ciphertext).decode("utf-8")
    except InvalidToken as exc:
        raise ConfigError("a stored secret cannot be decrypted with the configured keys") from exc
