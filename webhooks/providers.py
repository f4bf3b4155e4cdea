"""Email provider webhooks: `POST /webhooks/mailgun`, `/webhooks/sendgrid`, `/webhooks/ses`.

Each request is verified (401 before anything is queued), normalised (`webhooks.events`) into one
message per provider event on queue `email_events`, and answered 2xx only after the messages are
stored. Concurrent requests share their writes (`webhooks.service.Batched`): one send of their
messages, one claim and one completion of their Mailgun tokens. Optional `service.extras`:
`"aws_fetch"` (a `url -> bytes` function used to fetch SNS signing certificates and to confirm
SNS subscriptions; default: httpx GET) and `"sns_certificates"` (a shared
`SnsCertificateCache`).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from assets.email.rules import receipt_key
from webhooks.events import (
    EventFormatError,
    normalise_mailgun,
    normalise_sendgrid,
    normalise_ses,
)
from webhooks.service import Batched, WebhookService
from webhooks.verify import (
    MailgunTokenStore,
    SignatureError,
    SnsCertificateCache,
    fetch_certificate,
    is_sns_https_url,
    load_sendgrid_key,
    verify_mailgun,
    verify_sendgrid,
    verify_sns,
)

log = logging.getLogger("supportflow.webhooks.email")

EVENTS_QUEUE = "email_events"
JSON = ("application/json",)
# SNS posts its JSON envelope as text/plain
SNS_CONTENT_TYPES = ("text/plain", "application/json")


def routes(service: WebhookService) -> list[Route]:
    settings = service.settings
    tokens = MailgunTokenStore(service.warehouse.connection)
    # concurrent requests' claims and completions share a statement and a commit
    claims = Batched(tokens.claim_many)
    completions = Batched(tokens.complete_many)
    aws_fetch = service.extras.get("aws_fetch", fetch_certificate)
    certificates = service.extras.get("sns_certificates") or SnsCertificateCache(aws_fetch)
    sendgrid_key = None
    if settings.sendgrid_public_key:
        sendgrid_key = load_sendgrid_key(settings.sendgrid_public_key)

    async def mailgun(request: Request) -> JSONResponse:
        document = service.parse_json(await service.read_body(request, JSON))
        if not isinstance(document, dict):
            service.reject(400, "Mailgun webhook body must be a JSON object")
        try:
            _, token = verify_mailgun(settings.mailgun_signing_key, document.get("signature"))
        except SignatureError as exc:
            service.reject(401, str(exc))
        messages = _normalised(service, normalise_mailgun, document)
        if not await claims.submit(token):
            service.reject(401, "Mailgun token already used (replay)")
        try:
            queued = await service.enqueue(EVENTS_QUEUE, messages, receipt_key)
        except BaseException:
            await service.run_sync(tokens.release, token)  # so Mailgun's retry is accepted
            raise
        await completions.submit(token)
        return JSONResponse({"queued": queued})

    async def sendgrid(request: Request) -> JSONResponse:
        raw = await service.read_body(request, JSON)
        try:
            verify_sendgrid(
                sendgrid_key,
                request.headers.get("x-twilio-email-event-webhook-signature"),
                request.headers.get("x-twilio-email-event-webhook-timestamp"),
                raw,
            )
        except SignatureError as exc:
            service.reject(401, str(exc))
        document = service.parse_json(raw, verified=True)  # the signature covers the raw body
        messages = _normalised(service, normalise_sendgrid, document)
        return JSONResponse({"queued": await service.enqueue(EVENTS_QUEUE, messages, receipt_key)})

    async def ses(request: Request) -> JSONResponse:
        envelope = service.parse_json(await service.read_body(request, SNS_CONTENT_TYPES))
        if not isinstance(envelope, dict):
            service.reject(400, "SNS message must be a JSON object")

        def verify() -> None:
            verify_sns(envelope, certificates, settings.ses_topic_arns)

        try:
            if certificates.holds(str(envelope.get("SigningCertURL") or "")):
                verify()  # the key is cached: no I/O, so no worker thread
            else:
                await service.run_sync(verify)  # the certificate fetch is blocking network I/O
        except SignatureError as exc:
            service.reject(401, str(exc))
        kind = envelope.get("Type")
        if kind == "SubscriptionConfirmation":
            await service.run_sync(_confirm_subscription, service, aws_fetch, envelope)
            return JSONResponse({"confirmed": envelope.get("TopicArn")})
        if kind == "UnsubscribeConfirmation":
            return JSONResponse({"acknowledged": envelope.get("TopicArn")})
        message_id = envelope.get("MessageId")
        if not isinstance(message_id, str) or not message_id:
            service.reject(400, "SNS notification lacks MessageId")
        messages = _normalised(service, normalise_ses, message_id, envelope.get("Message"))
        return JSONResponse({"queued": await service.enqueue(EVENTS_QUEUE, messages, receipt_key)})

    return [
        Route("/webhooks/mailgun", mailgun, methods=["POST"]),
        Route("/webhooks/sendgrid", sendgrid, methods=["POST"]),
        Route("/webhooks/ses", ses, methods=["POST"]),
    ]


def _normalised(service: WebhookService, normalise: Any, *args: Any) -> list[dict[str, Any]]:
    try:
        return normalise(*args)
    except EventFormatError as exc:  # verified, but not an event we can read: kept, 400
        service.reject_input(400, str(exc), EVENTS_QUEUE)


def _confirm_subscription(service: WebhookService, fetch: Any, envelope: dict[str, Any]) -> None:
    """Visit SubscribeURL (only on an SNS host; the topic was already checked as allowed)."""
    url = str(envelope.get("SubscribeURL") or "")
    if not is_sns_https_url(url):
        service.reject(400, "SubscribeURL is not on an SNS host")
    try:
        fetch(url)
    except Exception as exc:
        log.warning("could not confirm the SNS subscription to %s", envelope.get("TopicArn"))
        service.reject(502, f"could not confirm the subscription: {type(exc).__name__}")
    log.info("confirmed the SNS subscription to %s", envelope.get("TopicArn"))
