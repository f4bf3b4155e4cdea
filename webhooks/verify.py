"""Webhook signature verification for Mailgun (HMAC), SendGrid (ECDSA) and Amazon SNS (RSA).

Pure functions over the request's bytes and headers plus the `cryptography` package; each raises
`SignatureError` with a reason (the service answers 401 with it). Timestamps must be finite
numbers inside the replay window (`"nan"` is refused, not compared). Replay protection that needs
state (Mailgun tokens already seen) lives in `MailgunTokenStore`, in the warehouse, so every
service process shares it.

SNS signing certificates come only from `https://sns.<region>.amazonaws.com` on the standard
port, path `/SimpleNotificationService-<id>.pem`; `SnsCertificateCache` keeps them, remembers a
failed fetch for `failure_ttl_seconds` and makes at most `max_fetches_per_minute` fetches, so a
sender who knows an allowed topic cannot make the service fetch on every request. A certificate
that cannot be had is `CertificateUnavailable` (the service answers 503: SNS retries later).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

REPLAY_WINDOW_SECONDS = 15 * 60
# SNS retries a delivery for up to an hour with its default HTTP policy; the Timestamp is the
# publish time, so its window is wider than the providers' per-request timestamps.
SNS_REPLAY_WINDOW_SECONDS = 60 * 60
SNS_CERT_HOST = re.compile(r"^sns\.[a-z]{2}(-[a-z]+)+-\d\.amazonaws\.com(\.cn)?$")
SNS_CERT_PATH = re.compile(r"^/SimpleNotificationService-[A-Za-z0-9]{1,64}\.pem$")


class SignatureError(ValueError):
    """The request is not provably from the provider (bad/missing signature, stale, replayed)."""


class CertificateUnavailable(RuntimeError):
    """The SNS signing certificate cannot be had now (fetch failed, or fetches are rationed):
    not the sender's fault for sure, so the service answers 503 and SNS retries."""


def check_timestamp(timestamp: float, now: float, window: float = REPLAY_WINDOW_SECONDS) -> None:
    if not math.isfinite(timestamp):
        raise SignatureError("timestamp is not a finite number")
    if abs(now - timestamp) > window:
        raise SignatureError(f"timestamp outside the {int(window)} s replay window")


# --- Mailgun -----------------------------------------------------------------------------------


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    """hex HMAC-SHA256(key, timestamp + token), what Mailgun puts in `signature.signature`."""
    return hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def verify_mailgun(
    signing_key: str | None, signature: Any, *, now: float | None = None
) -> tuple[str, str]:
    """Check a Mailgun `signature` object; returns (timestamp, token) for the replay check."""
    if not signing_key:
        raise SignatureError("Mailgun webhooks are not configured (MAILGUN_WEBHOOK_SIGNING_KEY)")
    if not isinstance(signature, dict):
        raise SignatureError("missing Mailgun signature object")
    timestamp, token, given = (signature.get(k) for k in ("timestamp", "token", "signature"))
    if not all(isinstance(v, str) and v for v in (timestamp, token, given)):
        raise SignatureError("Mailgun signature needs timestamp, token and signature")
    try:
        ts = float(timestamp)
    except ValueError as exc:
        raise SignatureError("Mailgun timestamp is not a number") from exc
    expected = mailgun_signature(signing_key, timestamp, token)
    if not hmac.compare_digest(expected, given.lower()):
        raise SignatureError("Mailgun signature does not match")
    check_timestamp(ts, time.time() if now is None else now)
    return timestamp, token


class MailgunTokenStore:
    """Tokens already accepted, in `control.mailgun_seen_tokens`: shared by every process.

    `claim` records a token before its events are enqueued and `complete` marks it done after.
    A claim left incomplete for longer than `stale_after_seconds` belongs to a process that died
    in between; Mailgun's retry of that request may claim it again, so nothing is lost.
    """

    def __init__(self, connection: Callable[[], Any], stale_after_seconds: float = 120.0):
        self._connection = connection
        self._stale_after = stale_after_seconds

    def claim(self, token: str) -> bool:
        """True when the token is ours to enqueue: never seen, or an abandoned claim."""
        return self.claim_many([token]) == [True]

    def claim_many(self, tokens: Sequence[str]) -> list[bool]:
        """`claim` for each token, in one statement and one commit (concurrent requests); a
        token twice in `tokens` is claimed by its first occurrence only, as if they came one
        after the other."""
        with self._connection() as conn:
            claimed = {
                row[0]
                for row in conn.execute(
                    """
                    insert into control.mailgun_seen_tokens as t (token)
                    select distinct unnest(%s::text[])
                    on conflict (token) do update set seen_at = now()
                        where t.completed_at is null
                          and t.seen_at < now() - make_interval(secs => %s)
                    returning token
                    """,
                    (list(tokens), self._stale_after),
                )
            }
        answers = []
        for token in tokens:
            answers.append(token in claimed)
            claimed.discard(token)
        return answers

    def complete(self, token: str) -> None:
        """The token's events are enqueued: from now on it is a replay."""
        self.complete_many([token])

    def complete_many(self, tokens: Sequence[str]) -> list[None]:
        """`complete` for each token, in one statement and one commit."""
        with self._connection() as conn:
            conn.execute(
                "update control.mailgun_seen_tokens set completed_at = now() where token = any(%s)",
                (list(tokens),),
            )
        return [None] * len(tokens)

    def release(self, token: str) -> None:
        """Forget a claimed token whose events could not be enqueued, so the retry is accepted."""
        with self._connection() as conn:
            conn.execute("delete from control.mailgun_seen_tokens where token = %s", (token,))


# --- SendGrid ----------------------------------------------------------------------------------


def load_sendgrid_key(public_key_b64: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
    try:
        key = load_der_public_key(base64.b64decode(public_key_b64, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise SignatureError("SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 DER public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError("SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA key")
    return key


def verify_sendgrid(
    public_key: ec.EllipticCurvePublicKey | None,
    signature_b64: str | None,
    timestamp: str | None,
    body: bytes,
    *,
    now: float | None = None,
) -> None:
    """ECDSA P-256/SHA-256 over timestamp + raw body, signature base64 DER."""
    if public_key is None:
        raise SignatureError("SendGrid webhooks are not configured (SENDGRID_WEBHOOK_PUBLIC_KEY)")
    if not signature_b64 or not timestamp:
        raise SignatureError("missing X-Twilio-Email-Event-Webhook-Signature or -Timestamp")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        ts = float(timestamp)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError("malformed SendGrid signature or timestamp header") from exc
    try:
        public_key.verify(signature, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureError("SendGrid signature does not match") from exc
    check_timestamp(ts, time.time() if now is None else now)


# --- Amazon SNS --------------------------------------------------------------------------------

_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


def sns_string_to_sign(envelope: dict[str, Any]) -> bytes:
    """The documented canonical string: `name\\nvalue\\n` for each signed field, in order;
    `Subject` only when present."""
    kind = envelope.get("Type")
    if kind == "Notification":
        fields = _NOTIFICATION_FIELDS
    elif kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        fields = _SUBSCRIPTION_FIELDS
    else:
        raise SignatureError(f"unknown SNS message type {kind!r}")
    parts = []
    for name in fields:
        value = envelope.get(name)
        if value is None:
            if name == "Subject":
                continue
            raise SignatureError(f"SNS message lacks {name}")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


def is_sns_https_url(url: str) -> bool:
    """HTTPS to an SNS host on the standard port, without user info."""
    parts = urlsplit(url or "")
    try:
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and bool(SNS_CERT_HOST.match((parts.hostname or "").lower()))
        and port in (None, 443)
        and "@" not in parts.netloc
    )


def check_sns_cert_url(url: str) -> None:
    """HTTPS on the standard port of an SNS host, the certificate's path, nothing else."""
    parts = urlsplit(url or "")
    if (
        not is_sns_https_url(url)
        or not SNS_CERT_PATH.match(parts.path)
        or parts.query
        or parts.fragment
    ):
        raise SignatureError(
            "SigningCertURL is not https://sns.<region>.amazonaws.com/"
            "SimpleNotificationService-<id>.pem on the standard port"
        )


def fetch_certificate(url: str, timeout: float = 10.0) -> bytes:
    response = httpx.get(url, timeout=timeout, follow_redirects=False)
    response.raise_for_status()
    return response.content


class SnsCertificateCache:
    """Signing certificates by URL: fetched (only from an allowed URL) once, then cached. A
    failed fetch is remembered for `failure_ttl_seconds`, and at most `max_fetches_per_minute`
    fetches are made, whatever the URLs."""

    def __init__(
        self,
        fetch: Callable[[str], bytes] = fetch_certificate,
        *,
        failure_ttl_seconds: float = 60.0,
        max_fetches_per_minute: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._fetch = fetch
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._failures: dict[str, tuple[float, str]] = {}  # url -> (until, why)
        self._fetched_at: deque[float] = deque()
        self._failure_ttl = failure_ttl_seconds
        self._max_fetches = max_fetches_per_minute
        self._clock = clock
        self._lock = threading.Lock()

    def add(self, url: str, pem: bytes) -> None:
        """Pre-seed the cache (tests: the real AWS host cannot be reached)."""
        self._keys[url] = _rsa_key_from_pem(pem)

    def holds(self, url: str) -> bool:
        """Whether the key of `url` is cached (`public_key` then needs no fetch)."""
        return url in self._keys

    def public_key(self, url: str) -> rsa.RSAPublicKey:
        check_sns_cert_url(url)
        with self._lock:
            key = self._keys.get(url)
            if key is not None:
                return key
            now = self._clock()
            failed = self._failures.get(url)
            if failed is not None and failed[0] > now:
                raise CertificateUnavailable(f"{failed[1]} (failed recently; not fetched again)")
            while self._fetched_at and self._fetched_at[0] <= now - 60:
                self._fetched_at.popleft()
            if len(self._fetched_at) >= self._max_fetches:
                raise CertificateUnavailable("too many SNS certificate fetches; try again later")
            self._fetched_at.append(now)
        try:
            key = _rsa_key_from_pem(self._fetch(url))
        except (httpx.HTTPError, OSError, SignatureError) as exc:
            why = f"could not fetch the SNS signing certificate ({type(exc).__name__})"
            with self._lock:
                self._failures[url] = (self._clock() + self._failure_ttl, why)
                if len(self._failures) > 1000:  # forget the oldest: URLs vary freely
                    self._failures.pop(next(iter(self._failures)))
            raise CertificateUnavailable(why) from None
        with self._lock:
            self._keys[url] = key
            self._failures.pop(url, None)
        return key


def _rsa_key_from_pem(pem: bytes) -> rsa.RSAPublicKey:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise SignatureError("the SNS signing certificate is not a PEM certificate") from exc
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("the SNS signing certificate does not hold an RSA key")
    return key


def verify_sns(
    envelope: dict[str, Any],
    certificates: SnsCertificateCache,
    allowed_topics: tuple[str, ...],
    *,
    now: float | None = None,
) -> None:
    """Topic allowed, SignatureVersion 1 (SHA1withRSA) or 2 (SHA256withRSA), fresh Timestamp."""
    topic = envelope.get("TopicArn")
    if topic not in allowed_topics:
        raise SignatureError(f"SNS topic {topic!r} is not in SES_SNS_TOPIC_ARNS")
    version = str(envelope.get("SignatureVersion"))
    digest = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
    if digest is None:
        raise SignatureError(f"unsupported SNS SignatureVersion {version!r}")
    try:
        signature = base64.b64decode(envelope.get("Signature") or "", validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError("SNS Signature is not base64") from exc
    if not signature:
        raise SignatureError("missing SNS Signature")
    key = certificates.public_key(str(envelope.get("SigningCertURL") or ""))
    try:
        key.verify(signature, sns_string_to_sign(envelope), padding.PKCS1v15(), digest)
    except InvalidSignature as exc:
        raise SignatureError("SNS signature does not match") from exc
    try:
        sent = datetime.fromisoformat(str(envelope.get("Timestamp")).replace("Z", "+00:00"))
    except ValueError as exc:
        raise SignatureError("SNS Timestamp is not an ISO-8601 time") from exc
    check_timestamp(
        sent.timestamp(), time.time() if now is None else now, SNS_REPLAY_WINDOW_SECONDS
    )
