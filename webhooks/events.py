"""Normalising provider webhook events into `email_events` queue messages.

One message per provider event:

    {"type": "email_event", "event_id": "<provider>:<provider event id>",
     "provider", "provider_event_id", "provider_reference" (the provider's message id, the same
     one the helpdesk put on `email_sent`), "tenant_id" (from the custom parameters, may be null),
     "event_type" (the provider's name), "outcome" (assets.email.rules), "severity", "reason",
     "recipient", "sender", "occurred_at" (ISO 8601, UTC), "custom_params", "payload" (as received)}

The tenant comes from custom parameters the helpdesk sets when sending (Mailgun
`user-variables`, SendGrid custom args, SES message tags). `notification_id` is kept inside
`custom_params`, never at the top level, because the queue's idempotency id prefers a top-level
`notification_id` and every event of one notification would then look like a duplicate.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from assets.email.rules import classify_mailgun, classify_sendgrid, classify_ses


class EventFormatError(ValueError):
    """A verified request whose content is not a provider event we understand."""


SENDGRID_STANDARD_FIELDS = {
    "email",
    "timestamp",
    "event",
    "sg_event_id",
    "sg_message_id",
    "smtp-id",
    "category",
    "reason",
    "response",
    "status",
    "type",
    "bounce_classification",
    "attempt",
    "useragent",
    "ip",
    "url",
    "url_offset",
    "tls",
    "cert_err",
    "asm_group_id",
    "marketing_campaign_id",
    "marketing_campaign_name",
    "pool",
    "sg_machine_open",
    "sg_content_type",
    "sg_template_id",
    "sg_template_name",
}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


def _text(value: Any, what: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise EventFormatError(f"missing {what}")
    if not isinstance(value, str | int | float):
        raise EventFormatError(f"{what} must be a string")
    return str(value).strip()


def _message(
    provider: str,
    provider_event_id: str,
    provider_reference: str,
    event_type: str,
    outcome: str,
    occurred_at: str,
    custom: dict[str, Any],
    payload: dict[str, Any],
    *,
    severity: str | None = None,
    reason: str | None = None,
    recipient: str | None = None,
    sender: str | None = None,
) -> dict[str, Any]:
    tenant = custom.get("tenant_id")
    return {
        "type": "email_event",
        "event_id": f"{provider}:{provider_event_id}",
        "provider": provider,
        "provider_event_id": provider_event_id,
        "provider_reference": provider_reference,
        "tenant_id": str(tenant) if tenant not in (None, "") else None,
        "event_type": event_type,
        "outcome": outcome,
        "severity": severity,
        "reason": (reason or None) and str(reason)[:1000],
        "recipient": recipient,
        "sender": sender,
        "occurred_at": occurred_at,
        "custom_params": custom,
        "payload": payload,
    }


def strip_angle_brackets(message_id: str) -> str:
    return message_id.strip().removeprefix("<").removesuffix(">")


def normalise_mailgun(document: Any) -> list[dict[str, Any]]:
    """A Mailgun webhook (`{"signature": ..., "event-data": {...}}`) -> one message."""
    data = document.get("event-data") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        raise EventFormatError("Mailgun webhook lacks an event-data object")
    event = _text(data.get("event"), "event-data.event")
    event_id = _text(data.get("id"), "event-data.id")
    headers = (data.get("message") or {}).get("headers") or {}
    reference = strip_angle_brackets(_text(headers.get("message-id"), "message.headers.message-id"))
    timestamp = data.get("timestamp")
    if not isinstance(timestamp, int | float):
        raise EventFormatError("event-data.timestamp must be a number")
    custom = data.get("user-variables") or {}
    if not isinstance(custom, dict):
        raise EventFormatError("event-data.user-variables must be an object")
    status = data.get("delivery-status") or {}
    severity = data.get("severity")
    reason = data.get("reason")
    if isinstance(status, dict) and (status.get("description") or status.get("message")):
        reason = f"{reason or ''} {status.get('description') or status.get('message')}".strip()
    return [
        _message(
            "mailgun",
            event_id,
            reference,
            event,
            classify_mailgun(event, severity),
            _iso(float(timestamp)),
            custom,
            data,
            severity=severity,
            reason=reason,
            recipient=data.get("recipient"),
            sender=(data.get("envelope") or {}).get("sender"),
        )
    ]


def normalise_sendgrid(document: Any) -> list[dict[str, Any]]:
    """A SendGrid event webhook (a JSON array of events) -> one message per event."""
    if not isinstance(document, list) or not document:
        raise EventFormatError("SendGrid webhook body must be a non-empty JSON array of events")
    messages = []
    for index, event in enumerate(document):
        if not isinstance(event, dict):
            raise EventFormatError(f"SendGrid event {index} is not an object")
        name = _text(event.get("event"), f"event {index}: event")
        event_id = _text(event.get("sg_event_id"), f"event {index}: sg_event_id")
        # sg_message_id is the X-Message-Id returned at send time plus ".filter..." routing info
        message_id = _text(event.get("sg_message_id"), f"event {index}: sg_message_id")
        timestamp = event.get("timestamp")
        if not isinstance(timestamp, int | float):
            raise EventFormatError(f"event {index}: timestamp must be a number")
        custom = {k: v for k, v in event.items() if k not in SENDGRID_STANDARD_FIELDS}
        bounce_type = event.get("type")
        messages.append(
            _message(
                "sendgrid",
                event_id,
                message_id.split(".", 1)[0],
                name,
                classify_sendgrid(name, bounce_type),
                _iso(float(timestamp)),
                custom,
                event,
                severity=bounce_type if name == "bounce" else None,
                reason=event.get("reason") or event.get("response"),
                recipient=event.get("email"),
                sender=custom.get("sender"),
            )
        )
    return messages


def _ses_tags(mail: dict[str, Any]) -> dict[str, Any]:
    tags = mail.get("tags") or {}
    # event publishing gives each tag as a list of values
    return {k: (v[0] if isinstance(v, list) and v else v) for k, v in tags.items()}


def normalise_ses(sns_message_id: str, message_text: str) -> list[dict[str, Any]]:
    """The `Message` of an SNS notification carrying an SES event -> one message."""
    try:
        data = json.loads(message_text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise EventFormatError("SNS Message is not a JSON SES event") from exc
    if not isinstance(data, dict):
        raise EventFormatError("SNS Message is not a JSON SES event")
    event_type = _text(data.get("eventType") or data.get("notificationType"), "SES eventType")
    mail = data.get("mail")
    if not isinstance(mail, dict):
        raise EventFormatError("SES event lacks the mail object")
    reference = _text(mail.get("messageId"), "mail.messageId")
    detail_key = event_type[0].lower() + event_type[1:]
    detail = data.get(detail_key) if isinstance(data.get(detail_key), dict) else {}
    bounce_type = detail.get("bounceType") if event_type == "Bounce" else None
    occurred = detail.get("timestamp") or mail.get("timestamp")
    try:
        occurred_at = datetime.fromisoformat(
            _text(occurred, "SES timestamp").replace("Z", "+00:00")
        )
    except ValueError as exc:
        raise EventFormatError("SES timestamp is not ISO 8601") from exc
    recipients = (
        [r.get("emailAddress") for r in detail.get("bouncedRecipients") or []]
        or [r.get("emailAddress") for r in detail.get("complainedRecipients") or []]
        or detail.get("recipients")
        or mail.get("destination")
        or [None]
    )
    reason = None
    if event_type == "Bounce":
        diagnostic = next(
            (r.get("diagnosticCode") for r in detail.get("bouncedRecipients") or []), None
        )
        reason = " ".join(filter(None, (bounce_type, detail.get("bounceSubType"), diagnostic)))
    elif detail:
        reason = detail.get("reason") or detail.get("smtpResponse") or detail.get("errorMessage")
    return [
        _message(
            "ses",
            sns_message_id,
            reference,
            event_type,
            classify_ses(event_type, bounce_type),
            occurred_at.astimezone(UTC).isoformat(),
            _ses_tags(mail),
            data,
            severity=bounce_type,
            reason=reason,
            recipient=recipients[0],
            sender=mail.get("source"),
        )
    ]
