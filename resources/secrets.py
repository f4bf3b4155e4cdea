"""Encryption of secrets at rest (Zendesk tokens and the like) with Fernet.

The key is `SUPPORTFLOW_SECRET_KEY` in production; on one machine it is generated once into
`$SUPPORTFLOW_HOME/secret.key` with mode 0600. Plaintext never leaves `decrypt`'s caller.

Rotation: the key may be a comma-separated list, newest first (`new,old`). Secrets are encrypted
with the first key and decrypt with any; `rotate` re-encrypts a stored secret with the first key
(`supportflow secrets rotate` does it for every stored secret), after which the old key can go.

On AWS the deployment's own secrets (this key, the webhook signing keys) may instead be kept in
one AWS Secrets Manager secret, read with dagster-aws's `SecretsManagerResource`
(`read_secrets_manager_json`; which variables and which value wins is `resources/settings.py`).
"""

from __future__ import annotations

import json
import os
import warnings
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


def secret_region(secret_id: str) -> str | None:
    """The region of a Secrets Manager ARN (`arn:aws:secretsmanager:<region>:...`); None for a
    secret's name, which is looked up in the default region."""
    parts = secret_id.split(":")
    if len(parts) >= 7 and parts[0] == "arn" and parts[2] == "secretsmanager" and parts[3]:
        return parts[3]
    return None


def read_secrets_manager_json(secret_id: str, *, endpoint_url: str | None = None) -> dict[str, str]:
    """The JSON object of string values stored as the text of the Secrets Manager secret
    `secret_id` (an ARN, read in its own region, or a name), fetched through dagster-aws's
    `SecretsManagerResource` with the standard AWS credentials. Any failure is one `SecretError`
    naming `secret_id` and what went wrong, never quoting a value of the secret."""
    # imported here on purpose: only a deployment that keeps its secrets in Secrets Manager pays
    # for dagster-aws and boto3
    import dagster as dg
    from botocore.exceptions import BotoCoreError, ClientError
    from dagster_aws.secretsmanager import SecretsManagerResource

    where = f"the AWS Secrets Manager secret {secret_id}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # not a message for the CLI's user
        resource = SecretsManagerResource(
            region_name=secret_region(secret_id), endpoint_url=endpoint_url, max_attempts=3
        )
    try:
        response = resource.get_client().get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SecretError(
            f"cannot read {where}: {error.get('Code', 'error')}: {error.get('Message', exc)}"
        ) from None
    except BotoCoreError as exc:  # no credentials, no region, endpoint unreachable
        raise SecretError(f"cannot read {where}: {exc}") from None
    text = response.get("SecretString")
    if text is None:
        raise SecretError(f"{where} has no text value: store a JSON object as its SecretString")
    try:
        document = json.loads(text)
    except ValueError:  # the parser's message would quote the text: say only what is wrong
        document = None
    if not isinstance(document, dict):
        raise SecretError(
            f"{where} is not a JSON object such as "
            '{"SUPPORTFLOW_SECRET_KEY": "..."} (its value is not shown)'
        )
    not_text = sorted(name for name, value in document.items() if not isinstance(value, str))
    if not_text:
        raise SecretError(f"in {where}, the value of {', '.join(not_text)} must be a string")
    return document
