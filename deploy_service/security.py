"""Password hashing (Argon2id), encryption of secret values at rest (Fernet), and API key material.

All are configured per application: hashing cost from `PASSWORD_HASH_*`; encryption keys from
`SECRETS_ENCRYPTION_KEYS` (comma-separated Fernet keys, the first encrypts, all decrypt, so keys can
be rotated) or, when unset, one key derived from `SECRET_KEY` with HKDF; the API key pepper from
`API_KEY_PEPPER`, else derived from `SECRET_KEY` the same way.

API keys look like `dsk_` + 30 base62 characters (≥ 176 random bits) + 6 base62 characters of CRC32
over them, GitHub-style: a mistyped or made-up key is refused by its checksum without a database
query. Only HMAC-SHA256(pepper, key) is stored. Personal access tokens have the same shape with the
prefix `dsp_` (a token is never mistaken for an agent's key, nor one for the other).
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Flask, current_app

from deploy_service.errors import ConfigError
from deploy_service.settings import settings_for

_EXTENSION_KEY = "deploy_service.security"


@dataclass(frozen=True)
class Security:
    """The per-app password hasher and secret cipher."""

    hasher: PasswordHasher
    cipher: MultiFernet
    dummy_hash: str
    api_key_pepper: bytes


def _derive(secret_key: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key.encode())


def _derive_fernet_key(secret_key: str) -> bytes:
    return base64.urlsafe_b64encode(_derive(secret_key, b"deploy-service secrets v1"))


def init_security(app: Flask) -> None:
    """Build the hasher and cipher from the app's settings.

    Raises:
        ConfigError: a key in SECRETS_ENCRYPTION_KEYS is not a valid Fernet key.
    """
    settings = settings_for(app).auth
    hasher = PasswordHasher(
        time_cost=settings.password_time_cost, memory_cost=settings.password_memory_kib, parallelism=1
    )
    keys: list[str | bytes] = list(settings.encryption_keys) or [_derive_fernet_key(settings.secret_key)]
    try:
        cipher = MultiFernet([Fernet(key) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ConfigError("SECRETS_ENCRYPTION_KEYS must hold Fernet keys (32 url-safe base64 bytes)") from exc
    pepper = settings.api_key_pepper
    api_key_pepper = pepper.encode() if pepper else _derive(settings.secret_key, b"deploy-service api keys v1")
    app.extensions[_EXTENSION_KEY] = Security(hasher, cipher, hasher.hash("timing-equaliser"), api_key_pepper)


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


API_KEY_PREFIX = "dsk_"
PERSONAL_TOKEN_PREFIX = "dsp_"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LENGTH = 30
_CHECKSUM_LENGTH = 6
_SHAPES = {
    prefix: re.compile(rf"^{prefix}[0-9A-Za-z]{{{_BODY_LENGTH + _CHECKSUM_LENGTH}}}$")
    for prefix in (API_KEY_PREFIX, PERSONAL_TOKEN_PREFIX)
}


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LENGTH)


def generate_api_key(prefix: str = API_KEY_PREFIX) -> str:
    """A new API key (or, with `PERSONAL_TOKEN_PREFIX`, a personal token): prefix, 176 random bits in base62,
    CRC32 checksum."""
    body = _base62(int.from_bytes(secrets.token_bytes(22), "big"), _BODY_LENGTH)
    return f"{prefix}{body}{_checksum(body)}"


def api_key_well_formed(key: str, prefix: str = API_KEY_PREFIX) -> bool:
    """Shape and checksum for `prefix`; refuses typos and inventions without touching the database."""
    if not _SHAPES[prefix].fullmatch(key):
        return False
    body, checksum = key[len(prefix) : -_CHECKSUM_LENGTH], key[-_CHECKSUM_LENGTH:]
    return hmac.compare_digest(_checksum(body), checksum)


def bearer_token_matches(authorization: str | None, expected: str) -> bool:
    """Whether an `Authorization` header is `Bearer <expected>`; the token is compared in constant time."""
    scheme, _, presented = (authorization or "").strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), expected.encode())


def api_key_hash(key: str) -> str:
    """The stored form of a key: HMAC-SHA256 with the server's pepper, hex."""
    return hmac.new(_security().api_key_pepper, key.encode(), "sha256").hexdigest()
