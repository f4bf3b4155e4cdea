"""Normalising provider webhook events into `email_events` queue messages.

One message per provider event:

    {"type": "email_event", "event_id": "<provider>:<provider event id>",
     "provider", "provider_event_id", "provider_reference" (the provider's message id, the same
     one the helpdesk put on `email_sent`), "tenant_id" (from the custom parameters, may be null),
     "event_type" (the provider's name), "outcome" (assets.email.rules), "severity", "reason",
     "recipient", "sender", "occurred_at" (ISO 8601, UTC), "custom_params", "payload" (as received)}

The tenant comes from custom parameters the helpdesk sets when sending (Mailgun
`user-variables`, SendGrid custom args, SES message tags). `notification_id` is kept inside
`custom_params`, never at the top level: one notification has many events, and the message's
idempotency key is its `event_id` (`assets.email.rules.receipt_key`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from assets.email.rules import classify_mailgun, classify_sendgrid, classify_ses
from resources.payloads import PayloadError, loads


class EventFormatError(ValueError):
    """A verified request whose content is not a provider event we understand; the message
    names the field, never its value."""


# the latest instant a timestamp may name (datetime's range): 9999-12-31T23:59:59Z
MAX_EPOCH_SECONDS = 253_402_300_799


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


def _epoch(value: Any, what: str) -> str:
    """A provider's unix timestamp as ISO 8601 UTC: a finite number within datetime's range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventFormatError(f"{what} must be a number")
    if not math.isfinite(value) or not 0 <= value <= MAX_EPOCH_SECONDS:
        raise EventFormatError(f"{what} must be a unix time between 1970 and 9999")
    return datetime.fromtimestamp(value, tz=UTC).isoformat()


def _text(value: Any, what: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise EventFormatError(f"missing {what}")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise EventFormatError(f"{what} must be a string")
    if isinstance(value, float) and not math.isfinite(value):
        raise EventFormatError(f"{what} must be a string")
    return str(value).strip()


def _optional_text(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise EventFormatError(f"{what} must be a string or null")


def _object(value: Any, what: str) -> dict[str, Any]:
    """An optional JSON object (absent or null: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventFormatError(f"{what} must be an object")
    return value


def _objects(value: Any, what: str) -> list[dict[str, Any]]:
    """An optional list of JSON objects (absent or null: empty)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise EventFormatError(f"{what} must be a list of objects")
    return value


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
    message = _object(data.get("message"), "event-data.message")
    headers = _object(message.get("headers"), "event-data.message.headers")
    reference = strip_angle_brackets(_text(headers.get("message-id"), "message.headers.message-id"))
    occurred_at = _epoch(data.get("timestamp"), "event-data.timestamp")
    custom = _object(data.get("user-variables"), "event-data.user-variables")
    status = _object(data.get("delivery-status"), "event-data.delivery-status")
    severity = _optional_text(data.get("severity"), "event-data.severity")
    reason = _optional_text(data.get("reason"), "event-data.reason")
    detail = status.get("description") or status.get("message")
    if detail:
        detail = _optional_text(detail, "event-data.delivery-status.description")
        reason = f"{reason or ''} {detail}".strip()
    envelope = _object(data.get("envelope"), "event-data.envelope")
    return [
        _message(
            "mailgun",
            event_id,
            reference,
            event,
            classify_mailgun(event, severity),
            occurred_at,
            custom,
            data,
            severity=severity,
            reason=reason,
            recipient=_optional_text(data.get("recipient"), "event-data.recipient"),
            sender=_optional_text(envelope.get("sender"), "event-data.envelope.sender"),
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
        occurred_at = _epoch(event.get("timestamp"), f"event {index}: timestamp")
        custom = {k: v for k, v in event.items() if k not in SENDGRID_STANDARD_FIELDS}
        bounce_type = _optional_text(event.get("type"), f"event {index}: type")
        reason = _optional_text(event.get("reason"), f"event {index}: reason")
        response = _optional_text(event.get("response"), f"event {index}: response")
        messages.append(
            _message(
                "sendgrid",
                event_id,
                message_id.split(".", 1)[0],
                name,
                classify_sendgrid(name, bounce_type),
                occurred_at,
                custom,
                event,
                severity=bounce_type if name == "bounce" else None,
                reason=reason or response,
                recipient=_optional_text(event.get("email"), f"event {index}: email"),
                sender=_optional_text(custom.get("sender"), f"event {index}: sender"),
            )
        )
    return messages


def _ses_tags(mail: dict[str, Any]) -> dict[str, Any]:
    tags = _object(mail.get("tags"), "mail.tags")
    # event publishing gives each tag as a list of values
    return {k: (v[0] if isinstance(v, list) and v else v) for k, v in tags.items()}


def _addresses(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EventFormatError(f"{what} must be a list of addresses")
    return value


def normalise_ses(sns_message_id: str, message_text: str) -> list[dict[str, Any]]:
    """The `Message` of an SNS notification carrying an SES event -> one message."""
    if not isinstance(message_text, str):
        raise EventFormatError("SNS Message must be a string holding a JSON SES event")
    try:
        data = loads(message_text)
    except PayloadError as exc:
        raise EventFormatError(f"SNS Message is not a JSON SES event: it is {exc}") from None
    if not isinstance(data, dict):
        raise EventFormatError("SNS Message is not a JSON SES event")
    event_type = _text(data.get("eventType") or data.get("notificationType"), "SES eventType")
    mail = data.get("mail")
    if not isinstance(mail, dict):
        raise EventFormatError("SES event lacks the mail object")
    reference = _text(mail.get("messageId"), "mail.messageId")
    detail_key = event_type[0].lower() + event_type[1:]
    detail = data.get(detail_key) if isinstance(data.get(detail_key), dict) else {}
    bounce_type = None
    if event_type == "Bounce":
        bounce_type = _optional_text(detail.get("bounceType"), "bounce.bounceType")
    occurred = detail.get("timestamp") or mail.get("timestamp")
    try:
        occurred_at = datetime.fromisoformat(
            _text(occurred, "SES timestamp").replace("Z", "+00:00")
        )
        if occurred_at.tzinfo is None:
            occurred_at = occurred_at.replace(tzinfo=UTC)
        occurred_iso = occurred_at.astimezone(UTC).isoformat()
    except (ValueError, OverflowError) as exc:
        raise EventFormatError("SES timestamp is not an ISO 8601 time") from exc
    bounced = _objects(detail.get("bouncedRecipients"), f"{detail_key}.bouncedRecipients")
    complained = _objects(detail.get("complainedRecipients"), f"{detail_key}.complainedRecipients")
    listed = _addresses(detail.get("recipients"), f"{detail_key}.recipients")
    destination = _addresses(mail.get("destination"), "mail.destination")
    recipients = (
        [r.get("emailAddress") for r in bounced]
        or [r.get("emailAddress") for r in complained]
        or listed
        or destination
        or [None]
    )
    reason = None
    if event_type == "Bounce":
        diagnostic = next((r.get("diagnosticCode") for r in bounced), None)
        parts = (bounce_type, detail.get("bounceSubType"), diagnostic)
        reason = " ".join(str(part) for part in parts if part)
    elif detail:
        reason = detail.get("reason") or detail.get("smtpResponse") or detail.get("errorMessage")
        reason = _optional_text(reason, f"{detail_key}.reason")
    return [
        _message(
            "ses",
            sns_message_id,
            reference,
            event_type,
            classify_ses(event_type, bounce_type),
            occurred_iso,
            _ses_tags(mail),
            data,
            severity=bounce_type,
            reason=reason,
            recipient=_optional_text(recipients[0], "recipient emailAddress"),
            sender=_optional_text(mail.get("source"), "mail.source"),
        )
    ]
