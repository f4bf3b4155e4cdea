"""Settings read from the environment (resources/settings.py): every variable the README lists is
read, a value supportflow cannot use is one clear error naming the variable (also through the
CLI), and SUPPORTFLOW_SECRET_KEY from the environment is the key secrets are encrypted with."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from orchestration.cli import main
from resources.secrets import SecretBox, SecretError, key_file
from resources.settings import ConfigError, Settings


def test_email_retention_and_ticket_settings_come_from_the_environment(tmp_path):
    settings = Settings.from_env(
        {
            "SUPPORTFLOW_HOME": str(tmp_path),
            "SUPPORTFLOW_EMAIL_TIMEZONE": "Europe/Berlin",
            "SUPPORTFLOW_EMAIL_DEFAULT_POD": "eu-1",
            "SUPPORTFLOW_EMAIL_INTERNAL_SENDERS": " ops@acme.example , bot@acme.example,,",
            "SUPPORTFLOW_EMAIL_RETENTION_DAYS": "30",
            "SUPPORTFLOW_ACTIVITY_RETENTION_DAYS": "120",
            "SUPPORTFLOW_TICKET_CLOSE_AFTER_MINUTES": "90",
            "SUPPORTFLOW_POD": "us-2",
            "SUPPORTFLOW_QUEUE_BACKEND": " SQS ",
            "SUPPORTFLOW_EXPORT_URL": "s3://exports/acme",
            "SUPPORTFLOW_ALERT_SNS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:alerts",
            "SES_SNS_TOPIC_ARNS": "arn:aws:sns:eu-west-1:1:a, arn:aws:sns:eu-west-1:1:b",
            "SUPPORTFLOW_PARTITIONS_START": " 2026-06-15 ",
            "SUPPORTFLOW_SQS_WAIT_SECONDS": "0",
            "SUPPORTFLOW_DRAIN_PROCESSES": "3",
        }
    )
    assert settings.drain_processes == 3
    assert settings.partitions_start == "2026-06-15"
    assert settings.sqs_wait_seconds == 0
    assert settings.home == tmp_path.resolve()
    assert settings.email_timezone == "Europe/Berlin"
    assert settings.email_default_pod == "eu-1"
    assert settings.email_internal_senders == ("ops@acme.example", "bot@acme.example")
    assert settings.email_retention_days == 30
    assert settings.activity_retention_days == 120
    assert settings.ticket_close_after_minutes == 90
    assert (settings.pod, settings.queue_backend) == ("us-2", "sqs")
    assert settings.export_url == "s3://exports/acme"
    assert settings.alert_sns_topic_arn == "arn:aws:sns:eu-west-1:123456789012:alerts"
    assert settings.ses_topic_arns == ("arn:aws:sns:eu-west-1:1:a", "arn:aws:sns:eu-west-1:1:b")


def test_defaults_when_nothing_is_set(tmp_path):
    settings = Settings.from_env({"SUPPORTFLOW_HOME": str(tmp_path)})
    assert (settings.email_timezone, settings.email_default_pod) == ("UTC", "default")
    assert settings.email_retention_days == 7
    assert settings.activity_retention_days is None  # the activities domain's own default
    assert settings.ticket_close_after_minutes == 24 * 60
    assert (settings.queue_backend, settings.pod) == ("postgres", "default")
    assert settings.export_url == str(tmp_path.resolve() / "exports")
    assert settings.secret_key is None and settings.email_internal_senders == ()
    assert settings.partitions_start == "2026-11-01"
    assert settings.sqs_wait_seconds == 10
    assert 1 <= settings.drain_processes <= 4


BAD_VALUES = [
    ("SUPPORTFLOW_EMAIL_TIMEZONE", "Mars/Olympus_Mons", "IANA time zone"),
    ("SUPPORTFLOW_EMAIL_RETENTION_DAYS", "seven", "whole number"),
    ("SUPPORTFLOW_EMAIL_RETENTION_DAYS", "0", "at least 1"),
    ("SUPPORTFLOW_DRAIN_PROCESSES", "0", "at least 1"),
    ("SUPPORTFLOW_DRAIN_PROCESSES", "two", "whole number"),
    ("SUPPORTFLOW_EMAIL_DEFAULT_POD", "eu/1", "letters, digits and dashes"),
    ("SUPPORTFLOW_POD", "eu 1", "letters, digits and dashes"),
    ("SUPPORTFLOW_ACTIVITY_RETENTION_DAYS", "-3", "at least"),
    ("SUPPORTFLOW_TICKET_CLOSE_AFTER_MINUTES", "1.5", "whole number"),
    ("SUPPORTFLOW_QUEUE_BACKEND", "kafka", "one of postgres, sqs"),
    ("SUPPORTFLOW_PARTITIONS_START", "2026-13-01", "a date as YYYY-MM-DD"),
    ("SUPPORTFLOW_PARTITIONS_START", "last month", "a date as YYYY-MM-DD"),
    ("SUPPORTFLOW_SQS_WAIT_SECONDS", "21", "at most 20"),
    ("SUPPORTFLOW_SQS_WAIT_SECONDS", "-1", "at least 0"),
]


@pytest.mark.parametrize(("name", "value", "why"), BAD_VALUES)
def test_a_bad_value_is_one_error_naming_the_variable(tmp_path, name, value, why):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SUPPORTFLOW_HOME": str(tmp_path), name: value})
    message = str(caught.value)
    assert message.startswith(name) and why in message and value.strip() in message
    assert "\n" not in message


@pytest.mark.parametrize(("name", "value", "why"), BAD_VALUES[:3])
def test_the_cli_reports_a_bad_setting_in_one_line(monkeypatch, capsys, name, value, why):
    monkeypatch.setenv(name, value)
    assert main(["stats", "templates", "acme"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and why in err
    assert "Traceback" not in err


def test_secret_key_from_the_environment_encrypts_and_no_key_file_is_written(tmp_path):
    key = Fernet.generate_key().decode()
    settings = Settings.from_env({"SUPPORTFLOW_HOME": str(tmp_path), "SUPPORTFLOW_SECRET_KEY": key})
    assert settings.secret_key == key
    box = SecretBox.from_settings(settings.secret_key, settings.home)
    token = box.encrypt("zendesk-token-123")
    assert Fernet(key.encode()).decrypt(token) == b"zendesk-token-123"  # that key, no other
    assert not key_file(settings.home).exists()
    # a machine with a generated key file cannot read it: the key really came from the env
    local = SecretBox.from_settings(None, Path(tmp_path / "other-home"))
    assert key_file(tmp_path / "other-home").exists()
    with pytest.raises(SecretError, match="secret key changed"):
        local.decrypt(token)


def test_secret_key_that_is_not_a_fernet_key_is_a_clear_error(tmp_path):
    with pytest.raises(SecretError, match="SUPPORTFLOW_SECRET_KEY is not a valid Fernet key"):
        SecretBox.from_settings("not-a-key", tmp_path)
