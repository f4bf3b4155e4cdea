"""Encryption of secrets at rest (Zendesk tokens and the like) with Fernet.

The key is `SUPPORTFLOW_SECRET_KEY` in production; on one machine it is generated once into
`$SUPPORTFLOW_HOME/secret.key` with mode 0600. Plaintext never leaves `decrypt`'s caller.

Rotation: the key may be a comma-separated list, newest first (`new,old`). Secrets are encrypted
with the first key and decrypt with any; `rotate` re-encrypts a stored secret with the first key
(`supportflow secrets rotate` does it for every stored secret), after which the old key can go.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretError(RuntimeError):
    """A secret could not be decrypted with the configured key."""


def key_file(home: Path) -> Path:
    return home / "secret.key"


def load_or_create_key(home: Path) -> bytes:
    """The key from `$SUPPORTFLOW_HOME/secret.key`, generated with mode 0600 on first use."""
    path = key_file(home)
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # O_EXCL: when two processes race, one writes and the other reads the winner's key
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class SecretBox:
    """Encrypts and decrypts short secrets."""

    def __init__(self, key: bytes | str):
        raw = key if isinstance(key, bytes) else key.encode()
        keys = [part.strip() for part in raw.split(b",") if part.strip()]
        try:
            fernets = [Fernet(part) for part in keys]
        except ValueError:
            fernets = []
        if not fernets:
            raise SecretError(
                "SUPPORTFLOW_SECRET_KEY is not a valid Fernet key (32 url-safe base64 bytes; "
                "several, comma-separated, newest first, while rotating)"
            ) from None
        self._fernet = MultiFernet(fernets)

    @classmethod
    def from_settings(cls, secret_key: str | None, home: Path) -> SecretBox:
        return cls(secret_key if secret_key else load_or_create_key(home))

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def rotate(self, token: bytes) -> bytes:
        """The same secret encrypted with the first (newest) key."""
        try:
            return self._fernet.rotate(bytes(token))
        except InvalidToken as exc:
            raise SecretError(
                "a stored secret cannot be decrypted with any key of SUPPORTFLOW_SECRET_KEY"
            ) from exc

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(token)).decode()
        except InvalidToken as exc:
            raise SecretError(
                "a stored secret cannot be decrypted: the secret key changed since it was stored"
            ) from exc
