"""Conversations feedback: what customers write on the social channels and by mail.

Reads the conversations domain's messages (through `assets.conversations.store`): every customer
message of the workspace's tenant that counts (neither shadowed by a disabled origin, removed on
the channel nor hidden by moderation), optionally only of some origins (`--origin`, by name) or
channels (`--channel`). A review's or survey's 1-5 rating comes along as the item's rating. A
mail's greeting line and its sign-off ("Best regards, / Ann") are dropped: they are not what the
customer said, and would otherwise become the workspace's most frequent "topic".

Each pull pages through the tenant's customer messages and keeps those not yet in
`raw.feedback_items` (or whose text or rating changed): messages that arrive late (out of order)
or become visible later (an origin re-enabled, a message unhidden) are still picked up, and
nothing is read twice into the table. Once pulled, an item stays, as for the other kinds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg

from assets.conversations.rules import CHANNELS
from assets.conversations.store import CustomerMessage, customer_messages, list_origins
from assets.feedback.rules import (
    FeedbackItem,
    PulledBatch,
    SourceConfigError,
    SourceRef,
    clean_html,
)
from assets.feedback.sources.base import ConfigContext, PullContext, SourceKind, SourceOption

PAGE_ROWS = 5000

# A mail's first line when it only greets, and a line that only signs off (then a name or two).
_GREETING = re.compile(
    r"^(hello|hi|hey|dear [^,]{1,40}|good (morning|afternoon|evening)|hallo|guten tag|"
    r"sehr geehrte[^,]{0,40}|hola|buenos d[ií]as|bonjour|buongiorno|ciao|ol[áa]|oi)[\s,.!]*$",
    re.IGNORECASE,
)
_SIGN_OFF = re.compile(
    r"^(best|best regards|kind regards|regards|many thanks|thanks|thank you|cheers|sincerely|"
    r"viele gr[üu](ß|ss)e|mit freundlichen gr[üu](ß|ss)en|beste gr[üu](ß|ss)e|saludos|"
    r"un saludo|atentamente|cordialement|bien [àa] vous|cordiali saluti|saluti|atenciosamente|"
    r"abra[çc]os)[\s,.!]*$",
    re.IGNORECASE,
)
SIGNATURE_LINES = 3  # a sign-off is looked for this far from the end (it, then a name or two)


def strip_mail_frame(text: str) -> str:
    """The body of a mail without its greeting line and its sign-off with what follows."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and _GREETING.match(lines[0]):
        lines = lines[1:]
    for index in range(len(lines) - 1, max(len(lines) - 1 - SIGNATURE_LINES, 0), -1):
        if _SIGN_OFF.match(lines[index]):
            lines = lines[:index]
            break
    return "\n".join(lines)


def conversation_tables_exist(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "select to_regclass('raw.conversation_messages') is not null "
        "and to_regclass('control.origins') is not null"
    ).fetchone()
    return bool(row[0])


class ConversationsKind(SourceKind):
    name = "conversations"
    description = "customer messages of the tenant's social and mail origins (conversations)"
    options = (
        SourceOption("origin", "origin name (repeat for several; default: all)", multiple=True),
        SourceOption(
            "channel",
            f"one of {', '.join(CHANNELS)} (repeat for several; default: all)",
            multiple=True,
        ),
    )

    def build_config(
        self, options: Mapping[str, Any], context: ConfigContext | None = None
    ) -> dict[str, Any]:
        origins = sorted({str(o).strip() for o in options.get("origin") or () if str(o).strip()})
        channels = sorted({str(c).strip().lower() for c in options.get("channel") or ()})
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            raise SourceConfigError(
                f"--channel: unknown {', '.join(unknown)}; expected one of {', '.join(CHANNELS)}"
            )
        return {"origins": origins, "channels": channels}

    def after_create(self, conn: psycopg.Connection, source: SourceRef) -> dict[str, str]:
        """Refuse origins the workspace's tenant does not have (the source row is rolled back)."""
        if not conversation_tables_exist(conn):
            raise SourceConfigError("conversations are not set up here (no control.origins)")
        known = {origin.name for origin in list_origins(conn, source.tenant_id)}
        missing = [name for name in source.config.get("origins") or () if name not in known]
        if missing:
            raise SourceConfigError(
                f"--origin: tenant {source.tenant_id!r} has no origin named {', '.join(missing)}"
            )
        return {}

    def pull(self, source: SourceRef, context: PullContext) -> Iterator[PulledBatch]:
        origins = list(source.config.get("origins") or ())
        channels = list(source.config.get("channels") or ())
        cursor: dict[str, Any] = {"last_pull": datetime.now(UTC).isoformat(), "messages_read": 0}
        after: tuple[datetime, str] | None = None
        while True:
            with context.connection() as conn:
                if not conversation_tables_exist(conn):
                    yield PulledBatch([], cursor, fetched=0)
                    return
                page = customer_messages(
                    conn,
                    source.tenant_id,
                    origins=origins,
                    channels=channels,
                    after=after,
                    limit=PAGE_ROWS,
                )
                items = [item for item in map(partial(self._item, source), page) if item.text]
                known = dict(
                    conn.execute(
                        "select external_id, content_hash from raw.feedback_items"
                        " where source_id = %s and external_id = any(%s)",
                        (source.source_id, [item.external_id for item in items]),
                    ).fetchall()
                )
            # one batch per page, also when all of it is known: the cursor shows the progress
            cursor = {**cursor, "messages_read": cursor["messages_read"] + len(page)}
            fresh = [item for item in items if known.get(item.external_id) != item.content_hash]
            yield PulledBatch(fresh, cursor, fetched=len(page))
            if len(page) < PAGE_ROWS:
                return
            after = (page[-1].sent_at, page[-1].message_id)

    @staticmethod
    def _item(source: SourceRef, message: CustomerMessage) -> FeedbackItem:
        return FeedbackItem(
            workspace_id=source.workspace_id,
            tenant_id=source.tenant_id,
            source=source.kind,
            source_id=source.source_id,
            external_id=message.message_id,
            author=message.author_name or message.author_external_id,
            text=clean_html(
                strip_mail_frame(message.text) if message.channel == "mail" else message.text
            ),
            created_at=message.sent_at,
            rating=None if message.rating is None else str(message.rating),
            raw_data={
                "message_id": message.message_id,
                "origin": message.origin_name,
                "channel": message.channel,
                "author_external_id": message.author_external_id,
                "ticket_sequence": message.sequence,
                "attachments": message.attachments,
            },
        )


KIND = ConversationsKind()
