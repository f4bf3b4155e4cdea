"""Realistic, correctly signed email provider webhooks for demo, tests and benchmarks.

`ProviderKeys.generate()` makes the secrets a deployment would get from each provider (a Mailgun
signing key, a SendGrid ECDSA P-256 key pair, an SNS signing certificate, self-signed here since
only AWS can sign for amazonaws.com) and `env()` gives the webhook service's matching variables.
`EmailEventGenerator` builds the helpdesk's `email_sent` messages and the provider requests that
follow them: Mailgun (one signed event per request), SendGrid (signed batches) and SES through
SNS (SignatureVersion 1 and 2). `scenario()` makes a whole stream with the mess real providers
produce: duplicates (re-signed re-deliveries of one event), out-of-order receipts (delivered
before accepted, a failure after a delivery), receipts arriving before their notification, and
receipts for mail from internal senders.

Every request keeps the events it carries (`PlannedEvent`) so a test can compute what the
pipeline should end with, without asking the pipeline.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from webhooks.verify import mailgun_signature, sns_string_to_sign

SNS_REGION = "us-east-1"
SNS_CERT_URL = (
    f"https://sns.{SNS_REGION}.amazonaws.com/SimpleNotificationService-sandbox0000000000.pem"
)
SES_TOPIC_ARN = f"arn:aws:sns:{SNS_REGION}:123456789012:ses-delivery-events"
INTERNAL_SENDER = "invitations@supportflow.example"
HELPDESK_SENDER = "support@{tenant}.helpdesk.example"


@dataclass
class ProviderKeys:
    """The secrets of the three providers, as a deployment configures them."""

    mailgun_signing_key: str
    sendgrid_private_key: ec.EllipticCurvePrivateKey
    sns_private_key: rsa.RSAPrivateKey
    sns_certificate_pem: bytes
    sns_certificate_url: str = SNS_CERT_URL
    ses_topic_arn: str = SES_TOPIC_ARN

    @classmethod
    def generate(cls) -> ProviderKeys:
        sns_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(sns_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .sign(sns_key, hashes.SHA256())
        )
        return cls(
            mailgun_signing_key="key-" + secrets.token_hex(16),
            sendgrid_private_key=ec.generate_private_key(ec.SECP256R1()),
            sns_private_key=sns_key,
            sns_certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
        )

    @property
    def sendgrid_public_key_b64(self) -> str:
        der = self.sendgrid_private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def env(self) -> dict[str, str]:
        """The webhook service's environment for these keys."""
        return {
            "MAILGUN_WEBHOOK_SIGNING_KEY": self.mailgun_signing_key,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": self.sendgrid_public_key_b64,
            "SES_SNS_TOPIC_ARNS": self.ses_topic_arn,
        }


@dataclass(frozen=True)
class PlannedEvent:
    """One provider event inside a request, with what it is about."""

    provider: str
    provider_event_id: str
    notification_id: str
    provider_reference: str
    tenant_id: str
    kind: str  # delivered, accepted, temporary, permanent, technical, open, click, complaint
    sender: str


@dataclass
class WebhookRequest:
    provider: str
    path: str
    headers: dict[str, str]
    body: bytes
    events: list[PlannedEvent] = field(default_factory=list)


@dataclass
class Scenario:
    notifications: list[dict[str, Any]]  # email_sent messages sent before the receipts
    late_notifications: list[dict[str, Any]]  # email_sent messages sent after the receipts
    requests: list[WebhookRequest]  # in the order to post them
    never_sent_references: list[str]  # receipts whose notification never comes: orphans


# provider event names for each kind
MAILGUN_EVENTS = {
    "accepted": ("accepted", None),
    "delivered": ("delivered", None),
    "temporary": ("failed", "temporary"),
    "permanent": ("failed", "permanent"),
    "technical": ("rejected", None),
    "open": ("opened", None),
    "click": ("clicked", None),
    "complaint": ("complained", None),
}
SENDGRID_EVENTS = {
    "accepted": ("processed", None),
    "delivered": ("delivered", None),
    "temporary": ("deferred", None),
    "blocked": ("bounce", "blocked"),
    "permanent": ("bounce", "bounce"),
    "dropped": ("dropped", None),
    "open": ("open", None),
    "click": ("click", None),
    "complaint": ("spamreport", None),
}
SES_EVENTS = {
    "accepted": ("Send", None),
    "delivered": ("Delivery", None),
    "temporary": ("Bounce", "Transient"),
    "undetermined": ("Bounce", "Undetermined"),
    "permanent": ("Bounce", "Permanent"),
    "technical": ("Reject", None),
    "open": ("Open", None),
    "click": ("Click", None),
    "complaint": ("Complaint", None),
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class EmailEventGenerator:
    def __init__(self, keys: ProviderKeys, seed: int = 7):
        self.keys = keys
        self.rng = random.Random(seed)

    # --- the helpdesk side ---------------------------------------------------------------------

    def notification(
        self,
        tenant_id: str,
        ticket_id: int,
        template_id: str,
        provider: str,
        sent_at: datetime,
        sender: str | None = None,
    ) -> dict[str, Any]:
        """An `email_sent` message as the helpdesk publishes it."""
        n = self.rng.getrandbits(64)
        reference = {
            "mailgun": f"{n:016x}.{tenant_id}@mg.helpdesk.example",
            "sendgrid": base64.urlsafe_b64encode(n.to_bytes(8, "big")).decode().rstrip("="),
            "ses": f"0100018{n:016x}-{uuid.UUID(int=n << 64 | n)}-000000",
        }[provider]
        return {
            "type": "notification",
            "notification_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "tenant_id": tenant_id,
            "ticket_id": ticket_id,
            "template_id": template_id,
            "recipient": f"customer{self.rng.randrange(10**6)}@example.org",
            "provider": provider,
            "provider_reference": reference,
            "sent_at": sent_at.isoformat(),
            "custom_params": {
                "sender": sender or HELPDESK_SENDER.format(tenant=tenant_id),
                "agent_id": self.rng.randrange(1, 50),
            },
        }

    def _custom(self, notification: dict[str, Any]) -> dict[str, Any]:
        return {
            "tenant_id": notification["tenant_id"],
            "notification_id": notification["notification_id"],
        }

    # --- Mailgun -------------------------------------------------------------------------------

    def mailgun_event(
        self, notification: dict[str, Any], kind: str, occurred_at: datetime
    ) -> tuple[dict[str, Any], PlannedEvent]:
        event, severity = MAILGUN_EVENTS[kind]
        event_id = base64.urlsafe_b64encode(self.rng.randbytes(16)).decode().rstrip("=")
        data: dict[str, Any] = {
            "id": event_id,
            "event": event,
            "timestamp": occurred_at.timestamp(),
            "log-level": "error" if event in ("failed", "rejected") else "info",
            "recipient": notification["recipient"],
            "recipient-domain": notification["recipient"].split("@")[1],
            "envelope": {
                "sender": notification["custom_params"]["sender"],
                "transport": "smtp",
                "targets": notification["recipient"],
            },
            "message": {
                "headers": {
                    "message-id": notification["provider_reference"],
                    "to": notification["recipient"],
                    "from": notification["custom_params"]["sender"],
                    "subject": f"Re: [#{notification['ticket_id']}] your request",
                }
            },
            "user-variables": self._custom(notification),
            "tags": [notification["template_id"]],
        }
        if severity:
            data["severity"] = severity
            data["reason"] = "generic" if severity == "permanent" else "greylisted"
            data["delivery-status"] = {
                "code": 550 if severity == "permanent" else 421,
                "description": "mailbox unavailable" if severity == "permanent" else "try later",
                "attempt-no": 1,
            }
        elif event == "delivered":
            data["delivery-status"] = {"code": 250, "message": "OK", "attempt-no": 1}
        return data, self._planned("mailgun", event_id, notification, kind)

    def mailgun_request(self, event_data: dict[str, Any], events: list[PlannedEvent], *,
                        signed_at: float | None = None, token: str | None = None,
                        key: str | None = None) -> WebhookRequest:  # fmt: skip
        """One Mailgun webhook; every call signs afresh (a re-delivery gets a new token)."""
        timestamp = str(int(signed_at if signed_at is not None else time.time()))
        token = token or secrets.token_hex(25)
        signature = mailgun_signature(key or self.keys.mailgun_signing_key, timestamp, token)
        body = {
            "signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": event_data,
        }
        return WebhookRequest(
            "mailgun",
            "/webhooks/mailgun",
            {"content-type": "application/json"},
            json.dumps(body).encode(),
            events,
        )

    # --- SendGrid ------------------------------------------------------------------------------

    def sendgrid_event(
        self, notification: dict[str, Any], kind: str, occurred_at: datetime
    ) -> tuple[dict[str, Any], PlannedEvent]:
        event, bounce_type = SENDGRID_EVENTS[kind]
        event_id = base64.urlsafe_b64encode(self.rng.randbytes(16)).decode().rstrip("=")
        data: dict[str, Any] = {
            "email": notification["recipient"],
            "timestamp": int(occurred_at.timestamp()),
            "event": event,
            "sg_event_id": event_id,
            "sg_message_id": f"{notification['provider_reference']}.filterdrecv-5645d9c87f-"
            f"{self.rng.randrange(10**5)}-1-{self.rng.randrange(10**8):08X}-1.0",
            "smtp-id": f"<{notification['provider_reference']}@ismtpd0001p1las1.sendgrid.net>",
            "category": [notification["template_id"]],
            **self._custom(notification),
            "sender": notification["custom_params"]["sender"],
        }
        if event == "bounce":
            data.update(type=bounce_type, status="5.1.1" if bounce_type == "bounce" else "4.7.1",
                        reason="550 5.1.1 user unknown" if bounce_type == "bounce"
                        else "421 blocked by policy")  # fmt: skip
        elif event == "deferred":
            data.update(response="400 try again later", attempt="1")
        elif event == "dropped":
            data.update(reason="Bounced Address", status="5.0.0")
        elif event == "delivered":
            data.update(response="250 OK", tls=1)
        return data, self._planned("sendgrid", event_id, notification, kind)

    def sendgrid_request(
        self,
        events: list[tuple[dict[str, Any], PlannedEvent]],
        *,
        signed_at: float | None = None,
        private_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> WebhookRequest:
        body = json.dumps([data for data, _ in events]).encode()
        timestamp = str(int(signed_at if signed_at is not None else time.time()))
        signature = (private_key or self.keys.sendgrid_private_key).sign(
            timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
        return WebhookRequest(
            "sendgrid",
            "/webhooks/sendgrid",
            {
                "content-type": "application/json",
                "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            },
            body,
            [planned for _, planned in events],
        )

    # --- SES through SNS -----------------------------------------------------------------------

    def ses_event(
        self, notification: dict[str, Any], kind: str, occurred_at: datetime
    ) -> tuple[dict[str, Any], PlannedEvent]:
        event_type, bounce_type = SES_EVENTS[kind]
        sender = notification["custom_params"]["sender"]
        mail = {
            "timestamp": _iso(occurred_at - timedelta(seconds=2)),
            "source": sender,
            "sourceArn": f"arn:aws:ses:{SNS_REGION}:123456789012:identity/{sender.split('@')[1]}",
            "sendingAccountId": "123456789012",
            "messageId": notification["provider_reference"],
            "destination": [notification["recipient"]],
            "tags": {k: [str(v)] for k, v in self._custom(notification).items()}
            | {"template_id": [notification["template_id"]]},
        }
        data: dict[str, Any] = {"eventType": event_type, "mail": mail}
        at = _iso(occurred_at)
        if event_type == "Bounce":
            data["bounce"] = {
                "bounceType": bounce_type,
                "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": notification["recipient"],
                                       "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                "timestamp": at,
                "feedbackId": f"0100{self.rng.getrandbits(60):015x}-000000",
            }  # fmt: skip
        elif event_type == "Delivery":
            data["delivery"] = {"timestamp": at, "recipients": [notification["recipient"]],
                                "smtpResponse": "250 2.6.0 Message received",
                                "processingTimeMillis": 546}  # fmt: skip
        elif event_type == "Complaint":
            data["complaint"] = {"timestamp": at, "complaintFeedbackType": "abuse",
                                 "complainedRecipients": [{"emailAddress":
                                                           notification["recipient"]}]}  # fmt: skip
        elif event_type == "Reject":
            data["reject"] = {"reason": "Bad content"}
        elif event_type in ("Open", "Click"):
            data[event_type.lower()] = {"timestamp": at, "ipAddress": "192.0.2.1",
                                        "userAgent": "Mozilla/5.0"}  # fmt: skip
        elif event_type == "Send":
            data["send"] = {}
        message_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return data, self._planned("ses", message_id, notification, kind)

    def sns_envelope(
        self,
        message: str,
        *,
        message_id: str | None = None,
        kind: str = "Notification",
        version: str = "1",
        topic_arn: str | None = None,
        sent_at: datetime | None = None,
        private_key: rsa.RSAPrivateKey | None = None,
    ) -> dict[str, Any]:
        topic = topic_arn or self.keys.ses_topic_arn
        envelope: dict[str, Any] = {
            "Type": kind,
            "MessageId": message_id or str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "TopicArn": topic,
            "Message": message,
            "Timestamp": _iso(sent_at or datetime.now(UTC)).replace("+00:00", "Z"),
            "SignatureVersion": version,
            "SigningCertURL": self.keys.sns_certificate_url,
        }
        if kind == "Notification":
            envelope["UnsubscribeURL"] = (
                f"https://sns.{SNS_REGION}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn="
                f"{topic}:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"
            )
        else:
            envelope["Token"] = secrets.token_hex(64)
            envelope["SubscribeURL"] = (
                f"https://sns.{SNS_REGION}.amazonaws.com/?Action=ConfirmSubscription"
                f"&TopicArn={topic}&Token={envelope['Token']}"
            )
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (private_key or self.keys.sns_private_key).sign(
            sns_string_to_sign(envelope), padding.PKCS1v15(), digest
        )
        envelope["Signature"] = base64.b64encode(signature).decode()
        return envelope

    def ses_request(
        self, data: dict[str, Any], planned: PlannedEvent, *, version: str = "1", **kwargs: Any
    ) -> WebhookRequest:
        """SES event in an SNS notification; the SNS MessageId is the provider event id, so a
        re-delivery (duplicate) carries the same one."""
        envelope = self.sns_envelope(
            json.dumps(data), message_id=planned.provider_event_id, version=version, **kwargs
        )
        return self.sns_request(envelope, [planned])

    def sns_request(self, envelope: dict[str, Any], events: list[PlannedEvent]) -> WebhookRequest:
        return WebhookRequest(
            "ses",
            "/webhooks/ses",
            {
                "content-type": "text/plain; charset=UTF-8",
                "x-amz-sns-message-type": envelope["Type"],
                "x-amz-sns-topic-arn": envelope["TopicArn"],
            },
            json.dumps(envelope).encode(),
            events,
        )

    # --- one planned event ---------------------------------------------------------------------

    def _planned(self, provider: str, event_id: str, n: dict[str, Any], kind: str) -> PlannedEvent:
        reference = n["provider_reference"]
        return PlannedEvent(
            provider, event_id, n["notification_id"], reference, n["tenant_id"], kind,
            n["custom_params"]["sender"],
        )  # fmt: skip

    def event(
        self, notification: dict[str, Any], kind: str, occurred_at: datetime
    ) -> tuple[dict[str, Any], PlannedEvent]:
        return {
            "mailgun": self.mailgun_event,
            "sendgrid": self.sendgrid_event,
            "ses": self.ses_event,
        }[notification["provider"]](notification, kind, occurred_at)

    def request_for(self, provider: str, items: list[tuple[dict[str, Any], PlannedEvent]]
                    ) -> WebhookRequest:  # fmt: skip
        if provider == "mailgun":
            ((data, planned),) = items
            return self.mailgun_request(data, [planned])
        if provider == "sendgrid":
            return self.sendgrid_request(items)
        ((data, planned),) = items
        return self.ses_request(data, planned, version=self.rng.choice(("1", "2")))

    # --- a whole stream ------------------------------------------------------------------------

    def scenario(
        self,
        tenants: list[str],
        notifications_per_tenant: int,
        now: datetime,
        *,
        days: int = 3,
        templates: tuple[str, ...] = ("reply", "forward", "satisfaction"),
        late_share: float = 0.1,
        duplicate_share: float = 0.2,
        internal_share: float = 0.05,
        never_sent: int = 2,
    ) -> Scenario:
        """Notifications sent over the last `days` days and the receipts that follow them."""
        rng = self.rng
        sent: list[dict[str, Any]] = []
        late: list[dict[str, Any]] = []
        items: list[tuple[float, str, tuple[dict[str, Any], PlannedEvent]]] = []
        ticket = 1000
        for tenant in tenants:
            for _ in range(notifications_per_tenant):
                ticket += 1
                provider = rng.choice(("mailgun", "sendgrid", "ses"))
                sent_at = now - timedelta(seconds=rng.uniform(60, days * 86400))
                internal = rng.random() < internal_share
                n = self.notification(tenant, ticket, rng.choice(templates), provider, sent_at,
                                      sender=INTERNAL_SENDER if internal else None)  # fmt: skip
                (late if rng.random() < late_share else sent).append(n)
                for kind, at in self._story(provider, sent_at):
                    items.append((rng.random(), provider, self.event(n, kind, at)))
        ghosts = []
        for _ in range(never_sent):
            ghost = self.notification(tenants[0], 1, templates[0], "mailgun", now)
            ghosts.append(ghost["provider_reference"])
            items.append((rng.random(), "mailgun", self.event(ghost, "delivered", now)))
        # receipts arrive in no particular order; some are re-delivered later
        items.sort(key=lambda item: item[0])
        requests: list[WebhookRequest] = []
        pending_sendgrid: list[tuple[dict[str, Any], PlannedEvent]] = []
        for _, provider, item in items:
            copies = 2 if rng.random() < duplicate_share else 1
            for copy in range(copies):
                if provider == "sendgrid":
                    pending_sendgrid.append(item)
                    if len(pending_sendgrid) >= rng.randint(1, 4):
                        requests.append(self.sendgrid_request(pending_sendgrid))
                        pending_sendgrid = []
                elif copy == 0:
                    requests.append(self.request_for(provider, [item]))
                else:  # a re-delivery: same event, signed again, somewhere later
                    later = self.request_for(provider, [item])
                    requests.insert(rng.randrange(len(requests) // 2, len(requests) + 1), later)
        if pending_sendgrid:
            requests.append(self.sendgrid_request(pending_sendgrid))
        return Scenario(sent, late, requests, ghosts)

    def _story(self, provider: str, sent_at: datetime) -> list[tuple[str, datetime]]:
        """What happens to one email: accepted, then delivered or failed, maybe opened."""
        rng = self.rng
        at = sent_at + timedelta(seconds=rng.uniform(1, 5))
        story = [("accepted", at)]
        roll = rng.random()
        if roll < 0.6:
            story.append(("delivered", at + timedelta(seconds=rng.uniform(1, 30))))
            if rng.random() < 0.4:
                story.append(("open", at + timedelta(minutes=rng.uniform(5, 600))))
                if rng.random() < 0.5:
                    story.append(("click", at + timedelta(minutes=rng.uniform(600, 700))))
            if rng.random() < 0.05:
                story.append(("complaint", at + timedelta(hours=rng.uniform(12, 24))))
        elif roll < 0.75:
            story.append(("temporary", at + timedelta(seconds=rng.uniform(1, 30))))
            if rng.random() < 0.5:  # the provider's retry got through: arrives, changes nothing
                story.append(("delivered", at + timedelta(minutes=rng.uniform(10, 60))))
        elif roll < 0.92:
            story.append(("permanent", at + timedelta(seconds=rng.uniform(1, 30))))
        elif provider != "sendgrid":
            story.append(("technical", at + timedelta(seconds=rng.uniform(1, 30))))
        else:
            story.append(("dropped", at + timedelta(seconds=rng.uniform(1, 30))))
        if rng.random() < 0.1:
            story.append(("accepted", at))  # a second "accepted" for the same mail (re-queue)
        return story
