"""Every queue's idempotency key, as the domain that produces its messages declares it.

The producers inside the domains (the webhook service, the email router) import their domain's
key directly; the entry points that send on behalf of someone else (`supportflow queue send`, the
demo) look it up here by queue name.
"""

from __future__ import annotations

from assets.activities.rules import MESSAGE_KEYS as ACTIVITY_KEYS
from assets.conversations.rules import MESSAGE_KEYS as CONVERSATION_KEYS
from assets.email.rules import MESSAGE_KEYS as EMAIL_KEYS
from assets.feedback.sources.webhook import MESSAGE_KEYS as FEEDBACK_KEYS
from resources.messages import DedupKey

MESSAGE_KEYS: dict[str, DedupKey | None] = {
    **ACTIVITY_KEYS,
    **EMAIL_KEYS,
    **FEEDBACK_KEYS,
    **CONVERSATION_KEYS,
}


def message_key(queue: str) -> DedupKey | None:
    """The idempotency key of `queue`'s messages (`email_events.<pod>` carries `email_events`'),
    None where its messages have no id (the queue hashes their body)."""
    return MESSAGE_KEYS.get(queue.partition(".")[0])
