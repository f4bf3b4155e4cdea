"""Configuration read from the environment, in one place.

Every other module receives a `Settings` (or values from it); nothing deep inside the code reads
`os.environ`. The variable names are part of the contract in ARCHITECTURE.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A setting has a value supportflow cannot use."""


QUEUE_BACKENDS = ("postgres", "sqs")


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None
    queue_backend: str
    sqs_prefix: str
    aws_endpoint_url: str | None
    secret_key: str | None
    export_url: str
    pod: str
    alert_sns_topic_arn: str | None
    mailgun_signing_key: str | None
    sendgrid_public_key: str | None
    ses_topic_arns: tuple[str, ...]

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("SUPPORTFLOW_HOME") or "./.supportflow").expanduser().resolve()
        backend = (env.get("SUPPORTFLOW_QUEUE_BACKEND") or "postgres").strip().lower()
        if backend not in QUEUE_BACKENDS:
            raise ConfigError(
                f"SUPPORTFLOW_QUEUE_BACKEND must be one of {', '.join(QUEUE_BACKENDS)}, "
                f"not {backend!r}"
            )
        topics = tuple(
            t.strip() for t in (env.get("SES_SNS_TOPIC_ARNS") or "").split(",") if t.strip()
        )
        return cls(
            home=home,
            database_url=env.get("SUPPORTFLOW_DATABASE_URL") or None,
            queue_backend=backend,
            sqs_prefix=env.get("SUPPORTFLOW_SQS_PREFIX") or "supportflow-",
            aws_endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            secret_key=env.get("SUPPORTFLOW_SECRET_KEY") or None,
            export_url=env.get("SUPPORTFLOW_EXPORT_URL") or str(home / "exports"),
            pod=env.get("SUPPORTFLOW_POD") or "default",
            alert_sns_topic_arn=env.get("SUPPORTFLOW_ALERT_SNS_TOPIC_ARN") or None,
            mailgun_signing_key=env.get("MAILGUN_WEBHOOK_SIGNING_KEY") or None,
            sendgrid_public_key=env.get("SENDGRID_WEBHOOK_PUBLIC_KEY") or None,
            ses_topic_arns=topics,
        )

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"
