"""Secrets from AWS Secrets Manager (`SUPPORTFLOW_SECRETS_ARN`), on moto's server (real HTTP, real
boto3 through dagster-aws's SecretsManagerResource): the secret key and the webhook signing keys
come from one JSON secret, a variable set in the environment wins, a secret that cannot be used
is one clear error naming it (never quoting a value), the code location hands the key to Dagster
by name, and the webhook service verifies with a key that came from the secret."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime

import boto3
import dagster as dg
import httpx
import pytest
from cryptography.fernet import Fernet

from orchestration.cli import main
from resources.runtime import build_resources
from resources.secrets import SecretBox, key_file
from resources.settings import SECRETS_MANAGER_VARIABLES, ConfigError, Settings
from sandbox.email_events import EmailEventGenerator, ProviderKeys
from webhooks.app import build_service, create_app, serve_in_thread

# not the default region (us-east-1 below): a secret is read in its ARN's own region
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def provider_keys() -> ProviderKeys:
    return ProviderKeys.generate()


@pytest.fixture
def stored(provider_keys) -> dict[str, str]:
    """What the deployment keeps in its secret."""
    return {
        "SUPPORTFLOW_SECRET_KEY": Fernet.generate_key().decode(),
        "MAILGUN_WEBHOOK_SIGNING_KEY": provider_keys.mailgun_signing_key,
        "SENDGRID_WEBHOOK_PUBLIC_KEY": provider_keys.sendgrid_public_key_b64,
    }


def create_secret(endpoint: str, text: str) -> str:
    client = boto3.client("secretsmanager", endpoint_url=endpoint, region_name=REGION)
    name = f"supportflow/prod-{uuid.uuid4().hex[:8]}"
    return client.create_secret(Name=name, SecretString=text)["ARN"]


@pytest.fixture
def secret_arn(aws, stored) -> str:
    return create_secret(aws, json.dumps(stored))


def clear_secret_variables(monkeypatch) -> None:
    """Unset the variables the secret may hold; they are restored after the test even when
    the code under test exports them to this process."""
    for name in SECRETS_MANAGER_VARIABLES:
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)


def test_settings_read_the_secret_key_and_the_signing_keys_from_the_secret(
    aws, secret_arn, stored, tmp_path
):
    settings = Settings.from_env(
        {
            "SUPPORTFLOW_HOME": str(tmp_path),
            "SUPPORTFLOW_SECRETS_ARN": secret_arn,
            "AWS_ENDPOINT_URL": aws,
        }
    )
    assert secret_arn.startswith(f"arn:aws:secretsmanager:{REGION}:")
    assert settings.secrets_arn == secret_arn
    assert settings.secret_key == stored["SUPPORTFLOW_SECRET_KEY"]
    assert settings.mailgun_signing_key == stored["MAILGUN_WEBHOOK_SIGNING_KEY"]
    assert settings.sendgrid_public_key == stored["SENDGRID_WEBHOOK_PUBLIC_KEY"]
    assert settings.from_secrets_manager == set(SECRETS_MANAGER_VARIABLES)
    # secrets at rest are encrypted with the key from the secret, and no key file is generated
    token = SecretBox.from_settings(settings.secret_key, settings.home).encrypt("zendesk-token")
    assert Fernet(stored["SUPPORTFLOW_SECRET_KEY"].encode()).decrypt(token) == b"zendesk-token"
    assert not key_file(settings.home).exists()


def test_a_variable_set_in_the_environment_wins_over_the_secret(aws, secret_arn, stored, tmp_path):
    own_key = Fernet.generate_key().decode()
    settings = Settings.from_env(
        {
            "SUPPORTFLOW_HOME": str(tmp_path),
            "SUPPORTFLOW_SECRETS_ARN": secret_arn,
            "AWS_ENDPOINT_URL": aws,
            "SUPPORTFLOW_SECRET_KEY": own_key,
            "MAILGUN_WEBHOOK_SIGNING_KEY": "",  # empty is unset: the secret's value
        }
    )
    assert settings.secret_key == own_key
    assert settings.mailgun_signing_key == stored["MAILGUN_WEBHOOK_SIGNING_KEY"]
    assert settings.from_secrets_manager == {
        "MAILGUN_WEBHOOK_SIGNING_KEY",
        "SENDGRID_WEBHOOK_PUBLIC_KEY",
    }


def test_a_secret_that_does_not_exist_is_one_error_naming_it(aws, tmp_path):
    arn = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:supportflow/none-AbCdEf"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "SUPPORTFLOW_HOME": str(tmp_path),
                "SUPPORTFLOW_SECRETS_ARN": arn,
                "AWS_ENDPOINT_URL": aws,
            }
        )
    message = str(caught.value)
    assert message.startswith("SUPPORTFLOW_SECRETS_ARN: cannot read the AWS Secrets Manager")
    assert arn in message and "ResourceNotFoundException" in message
    assert "\n" not in message and caught.value.__cause__ is None


LEAKED = "hunter2-do-not-print"
UNUSABLE = [
    (f"not json {LEAKED}", "is not a JSON object"),
    (json.dumps([LEAKED]), "is not a JSON object"),
    (json.dumps({"MAILGUN_WEBHOOK_SIGNING_KEY": 42}), "value of MAILGUN_WEBHOOK_SIGNING_KEY"),
    (
        json.dumps({"SUPPORTFLOW_SECRET_KEY": "k", "SUPPORTFLOW_DATABSE_URL": LEAKED}),
        "holds SUPPORTFLOW_DATABSE_URL; supportflow reads only SUPPORTFLOW_SECRET_KEY",
    ),
]


@pytest.mark.parametrize(("text", "why"), UNUSABLE)
def test_a_secret_supportflow_cannot_use_is_one_error_that_quotes_no_value(
    aws, tmp_path, text, why
):
    arn = create_secret(aws, text)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "SUPPORTFLOW_HOME": str(tmp_path),
                "SUPPORTFLOW_SECRETS_ARN": arn,
                "AWS_ENDPOINT_URL": aws,
            }
        )
    message = str(caught.value)
    assert message.startswith("SUPPORTFLOW_SECRETS_ARN: ") and arn in message and why in message
    assert LEAKED not in message and caught.value.__cause__ is None


def test_the_cli_reports_an_unreadable_secret_in_one_line(aws, monkeypatch, capsys):
    arn = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:supportflow/gone-AbCdEf"
    monkeypatch.setenv("SUPPORTFLOW_SECRETS_ARN", arn)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    assert main(["stats", "templates", "acme"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and arn in err and "SUPPORTFLOW_SECRETS_ARN" in err


def test_the_code_location_gets_the_key_from_the_secret_by_name_only(
    aws, secret_arn, stored, monkeypatch
):
    """Read from the process environment, as the code location and its run workers do: the key
    is exported to the process and given to Dagster as `dg.EnvVar`, so a run resolves it while
    the run's config (and the UI) holds only the variable's name."""
    clear_secret_variables(monkeypatch)
    monkeypatch.setenv("SUPPORTFLOW_SECRETS_ARN", secret_arn)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    settings = Settings.from_env()
    key = stored["SUPPORTFLOW_SECRET_KEY"]
    assert settings.secret_key == key and os.environ["SUPPORTFLOW_SECRET_KEY"] == key
    zendesk = build_resources(settings)["zendesk"]
    assert zendesk.secret_key == dg.EnvVar("SUPPORTFLOW_SECRET_KEY")
    assert isinstance(zendesk.secret_key, dg.EnvVar)

    @dg.asset
    def key_seen_by_the_run(zendesk: dg.ConfigurableResource) -> bool:
        return zendesk.secret_key == key  # type: ignore[attr-defined]

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [key_seen_by_the_run], resources={"zendesk": zendesk}, instance=instance
        )
        assert result.success and result.output_for_node("key_seen_by_the_run") is True
        logged = " ".join(str(e.event_specific_data) for e in result.all_events)
        assert key not in json.dumps(result.dagster_run.run_config) and key not in logged


def a_mailgun_request(generator: EmailEventGenerator, tenant: str, **kwargs):
    n = generator.notification(tenant, 42, "reply", "mailgun", datetime.now(UTC))
    data, planned = generator.mailgun_event(n, "permanent", datetime.now(UTC))
    return generator.mailgun_request(data, [planned], **kwargs)


def post(client: httpx.Client, request) -> httpx.Response:
    return client.post(request.path, content=request.body, headers=request.headers)


def test_the_webhook_service_verifies_with_signing_keys_from_the_secret(
    aws, secret_arn, provider_keys, db
):
    environ = {k: v for k, v in os.environ.items() if k not in SECRETS_MANAGER_VARIABLES}
    settings = Settings.from_env(
        {**environ, "SUPPORTFLOW_SECRETS_ARN": secret_arn, "AWS_ENDPOINT_URL": aws}
    )
    generator = EmailEventGenerator(provider_keys, seed=uuid.uuid4().int % 10**6)
    tenant = f"sm-{uuid.uuid4().hex[:8]}"
    with (
        serve_in_thread(create_app(build_service(settings))) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        signed = post(client, a_mailgun_request(generator, tenant))
        assert signed.status_code == 200, signed.text
        forged = post(client, a_mailgun_request(generator, tenant, key="key-" + "0" * 32))
        assert forged.status_code == 401, forged.text
        n = generator.notification(tenant, 43, "reply", "sendgrid", datetime.now(UTC))
        sendgrid = post(
            client,
            generator.sendgrid_request([generator.sendgrid_event(n, "open", datetime.now(UTC))]),
        )
        assert sendgrid.status_code == 200, sendgrid.text
    queued = db.execute(
        "select body->>'provider' from control.queue_messages"
        " where queue = 'email_events' and body->>'tenant_id' = %s order by message_id",
        (tenant,),
    ).fetchall()
    assert queued == [("mailgun",), ("sendgrid",)]
