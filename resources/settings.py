"""Configuration read from the environment, in one place.

This is the only module that reads `os.environ`: every other module receives a `Settings` (or
values from it). A value supportflow cannot use is one `ConfigError` naming the variable. The
variable names are part of the contract in ARCHITECTURE.md.

Secrets on AWS: `SUPPORTFLOW_SECRETS_ARN` names one AWS Secrets Manager secret (its ARN, or its
name in the default region) whose text is a JSON object keyed by variable names, e.g.
`{"SUPPORTFLOW_SECRET_KEY": "...", "MAILGUN_WEBHOOK_SIGNING_KEY": "..."}`; the keys it may hold
are `SECRETS_MANAGER_VARIABLES`. A variable set in the environment wins over the secret's value.
Every process that reads its settings (the code location and its run workers, the webhook
service, the CLI) reads the secret once, at start: a rotated value is picked up on restart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

from resources.secrets import SecretError, read_secrets_manager_json


class ConfigError(ValueError):
    """A setting has a value supportflow cannot use."""


QUEUE_BACKENDS = ("postgres", "sqs")
DEFAULT_TICKET_CLOSE_AFTER_MINUTES = 24 * 60
# The first day of every daily partition set unless SUPPORTFLOW_PARTITIONS_START says otherwise.
DEFAULT_PARTITIONS_START = "2026-11-01"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def _zone(env: Mapping[str, str], name: str) -> str:
    raw = (env.get(name) or "UTC").strip()
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{name} must be an IANA time zone such as Europe/Berlin, not {raw!r}"
        ) from None
    return raw


def _day(env: Mapping[str, str], name: str, default: str) -> str:
    raw = (env.get(name) or default).strip()
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        raise ConfigError(f"{name} must be a date as YYYY-MM-DD, not {raw!r}") from None


def partitions_start_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The first day of the daily partition sets (SUPPORTFLOW_PARTITIONS_START), for the
    definitions modules that declare their partitions at import."""
    env = os.environ if environ is None else environ
    return _day(env, "SUPPORTFLOW_PARTITIONS_START", DEFAULT_PARTITIONS_START)


def _pod(env: Mapping[str, str], name: str) -> str:
    raw = (env.get(name) or "default").strip()
    if not raw.replace("-", "").isalnum():
        raise ConfigError(f"{name} must be letters, digits and dashes, not {raw!r}")
    return raw


def _sqs_wait_seconds(env: Mapping[str, str], name: str) -> int:
    value = _int(env, name, 10, minimum=0)
    if value > 20:
        raise ConfigError(f"{name} must be at most 20 (SQS's longest poll), not {value}")
    return value


def default_drain_processes() -> int:
    """One worker per core this process may use, at most 4 (the database needs cores too)."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core counts
    cores = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    return max(1, min(cores, 4))


def _csv(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in (env.get(name) or "").split(",") if part.strip())


# What the Secrets Manager secret of SUPPORTFLOW_SECRETS_ARN may hold, by variable name.
SECRETS_MANAGER_VARIABLES = (
    "SUPPORTFLOW_SECRET_KEY",
    "MAILGUN_WEBHOOK_SIGNING_KEY",
    "SENDGRID_WEBHOOK_PUBLIC_KEY",
)


def _with_secrets_manager(
    env: Mapping[str, str], name: str
) -> tuple[Mapping[str, str], str | None, frozenset[str]]:
    """`env` completed with the values of the Secrets Manager secret `name` names (an unset or
    empty variable takes the secret's value; a set one keeps its own), that secret's id, and
    the variables whose value came from it."""
    secret_id = (env.get(name) or "").strip()
    if not secret_id:
        return env, None, frozenset()
    try:
        stored = read_secrets_manager_json(
            secret_id, endpoint_url=env.get("AWS_ENDPOINT_URL") or None
        )
    except SecretError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    unknown = sorted(set(stored) - set(SECRETS_MANAGER_VARIABLES))
    if unknown:
        raise ConfigError(
            f"{name}: the AWS Secrets Manager secret {secret_id} holds {', '.join(unknown)}; "
            f"supportflow reads only {', '.join(SECRETS_MANAGER_VARIABLES)} from it"
        )
    taken = {key: value for key, value in stored.items() if value and not env.get(key)}
    return {**env, **taken}, secret_id, frozenset(taken)


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
    activity_retention_days: int | None = None
    email_default_pod: str = "default"
    email_timezone: str = "UTC"
    email_internal_senders: tuple[str, ...] = ()
    email_retention_days: int = 7
    ticket_close_after_minutes: int = DEFAULT_TICKET_CLOSE_AFTER_MINUTES
    partitions_start: str = DEFAULT_PARTITIONS_START
    # SQS long polling: how long a receive from an empty queue waits (SQS allows 0 to 20 s)
    sqs_wait_seconds: int = 10
    # worker processes a drain may apply a deep backlog in (the conversations messages drain)
    drain_processes: int = 1
    # SUPPORTFLOW_SECRETS_ARN, and which variables took their value from that secret.
    secrets_arn: str | None = None
    from_secrets_manager: frozenset[str] = field(default_factory=frozenset)
    # The names of the variables that were set in the process environment: their values are
    # handed to Dagster as `dg.EnvVar`, so the UI shows a variable's name, never its value.
    from_process_env: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        env, secrets_arn, from_secrets_manager = _with_secrets_manager(
            env, "SUPPORTFLOW_SECRETS_ARN"
        )
        if environ is None and from_secrets_manager:
            # as if they had been set: Dagster then gets SUPPORTFLOW_SECRET_KEY as a dg.EnvVar
            # (its name in the UI, never its value), resolved here and in the run workers
            # this process starts
            set_process_environ({name: env[name] for name in from_secrets_manager})
        home = Path(env.get("SUPPORTFLOW_HOME") or "./.supportflow").expanduser().resolve()
        backend = (env.get("SUPPORTFLOW_QUEUE_BACKEND") or "postgres").strip().lower()
        if backend not in QUEUE_BACKENDS:
            raise ConfigError(
                f"SUPPORTFLOW_QUEUE_BACKEND must be one of {', '.join(QUEUE_BACKENDS)}, "
                f"not {backend!r}"
            )
        retention = env.get("SUPPORTFLOW_ACTIVITY_RETENTION_DAYS")
        return cls(
            home=home,
            database_url=env.get("SUPPORTFLOW_DATABASE_URL") or None,
            queue_backend=backend,
            sqs_prefix=env.get("SUPPORTFLOW_SQS_PREFIX") or "supportflow-",
            aws_endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            secret_key=env.get("SUPPORTFLOW_SECRET_KEY") or None,
            export_url=env.get("SUPPORTFLOW_EXPORT_URL") or str(home / "exports"),
            pod=_pod(env, "SUPPORTFLOW_POD"),
            alert_sns_topic_arn=env.get("SUPPORTFLOW_ALERT_SNS_TOPIC_ARN") or None,
            mailgun_signing_key=env.get("MAILGUN_WEBHOOK_SIGNING_KEY") or None,
            sendgrid_public_key=env.get("SENDGRID_WEBHOOK_PUBLIC_KEY") or None,
            ses_topic_arns=_csv(env, "SES_SNS_TOPIC_ARNS"),
            activity_retention_days=(
                _int(env, "SUPPORTFLOW_ACTIVITY_RETENTION_DAYS", 0) if retention else None
            ),
            email_default_pod=_pod(env, "SUPPORTFLOW_EMAIL_DEFAULT_POD"),
            email_timezone=_zone(env, "SUPPORTFLOW_EMAIL_TIMEZONE"),
            email_internal_senders=_csv(env, "SUPPORTFLOW_EMAIL_INTERNAL_SENDERS"),
            email_retention_days=_int(env, "SUPPORTFLOW_EMAIL_RETENTION_DAYS", 7),
            ticket_close_after_minutes=_int(
                env, "SUPPORTFLOW_TICKET_CLOSE_AFTER_MINUTES", DEFAULT_TICKET_CLOSE_AFTER_MINUTES
            ),
            partitions_start=partitions_start_from_env(env),
            sqs_wait_seconds=_sqs_wait_seconds(env, "SUPPORTFLOW_SQS_WAIT_SECONDS"),
            drain_processes=_int(env, "SUPPORTFLOW_DRAIN_PROCESSES", default_drain_processes()),
            secrets_arn=secrets_arn,
            from_secrets_manager=from_secrets_manager,
            from_process_env=frozenset(
                name for name in _SECRET_VARIABLES if environ is None and env.get(name)
            ),
        )

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def for_dagster(self, variable: str, value: Any) -> Any:
        """`value` as Dagster resource config: a `dg.EnvVar` when it came from the process
        environment (the UI then shows the variable's name), else the plain value."""
        if variable in self.from_process_env:
            if isinstance(value, int):
                return dg.EnvVar.int(variable)
            return dg.EnvVar(variable)
        return "" if value is None else value


# Values handed to Dagster by name rather than by value.
_SECRET_VARIABLES = (
    "SUPPORTFLOW_DATABASE_URL",
    "SUPPORTFLOW_SECRET_KEY",
    "SUPPORTFLOW_ACTIVITY_RETENTION_DAYS",
)


def set_process_environ(values: Mapping[str, str]) -> None:
    """Export variables to this process and its children (dbt's profile, DAGSTER_HOME)."""
    os.environ.update(values)


def put_first_on_path(directory: str) -> None:
    """Put `directory` first on PATH for this process and its children, so the tools installed
    beside the interpreter are found when its virtualenv is not activated (dbt, which dagster-dbt
    runs to prepare the manifest under `dagster dev`)."""
    entries = [e for e in os.environ.get("PATH", "").split(os.pathsep) if e and e != directory]
    os.environ["PATH"] = os.pathsep.join([directory, *entries])


def dev_environment() -> dict[str, str]:
    """The environment of `supportflow dev`'s processes: this one's, marked as a development
    session (dagster-dbt then prepares the dbt manifest at load, `DbtProject.prepare_if_dev`)."""
    return {**os.environ, "DAGSTER_IS_DEV_CLI": "1"}
