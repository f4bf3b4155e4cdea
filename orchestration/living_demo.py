"""The living demo: what `supportflow dev` keeps running after `supportflow demo`.

The demo registered a desk and a Discourse forum at the address of its sandbox, which stopped
with it. Under `supportflow dev` this module serves the sandbox again at that address (or at a
free one, re-pointing the desk and the forum), runs the webhook service, and publishes a little
of everything at a gentle rate: ticket changes in the sandbox's Zendesk, forum posts,
activities, sent emails with their providers' signed webhooks, pushed feedback, channel
messages. The daemon's sensors and schedules then launch runs as they would in production, so
runs succeed, partitions fill and marts refresh while you watch.

Nothing of this starts without a demo in `SUPPORTFLOW_HOME` (a real deployment): see
`demo_was_run`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestration.demo import (
    DEMO_CONVERSATION_AUTHORS,
    DEMO_DESK,
    DEMO_SEED,
    DEMO_TENANT,
    DEMO_TICKETS,
    DEMO_WORKSPACE,
    demo_now,
    demo_sandbox,
    sandbox_port_file,
    serve_sandbox,
    webhook_service,
)
from resources.settings import Settings

DEFAULT_INTERVAL_SECONDS = 60.0

logger = logging.getLogger("supportflow.living_demo")


def demo_was_run(settings: Settings) -> bool:
    """Whether `supportflow demo` ran in this home (it records its sandbox's port there)."""
    return sandbox_port_file(settings).exists()


def point_demo_at(conn: Any, sandbox_url: str) -> None:
    """The demo's desk and forum source at `sandbox_url` (where the sandbox now is)."""
    conn.execute(
        "update control.desks set base_url = %s where name = %s and base_url is distinct from %s",
        (sandbox_url, DEMO_DESK, sandbox_url),
    )
    conn.execute(
        "update control.feedback_sources s"
        " set config = jsonb_set(s.config, '{base_url}', to_jsonb(%s::text))"
        " from control.workspaces w"
        " where w.workspace_id = s.workspace_id and w.name = %s and s.kind = 'discourse'"
        " and s.config ->> 'base_url' is distinct from %s",
        (sandbox_url, DEMO_WORKSPACE, sandbox_url),
    )


@dataclass
class Generator:
    """One round of events every `interval` seconds, each with fresh ids."""

    sandbox_url: str
    webhooks_url: str
    sandbox_config: Any
    keys: Any
    webhook_token: str
    queues: Any
    interval: float = DEFAULT_INTERVAL_SECONDS
    rounds: int = 0
    stop_event: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.publish_round()
            except Exception as exc:  # noqa: BLE001 - a round that fails is logged, the next one runs
                logger.warning("living demo: a round failed: %s: %s", type(exc).__name__, exc)
            self.stop_event.wait(self.interval)

    def publish_round(self) -> dict[str, int]:
        """Ticket changes and forum posts in the sandbox; activities, sent emails and signed
        webhooks, pushed feedback and channel messages to the platform."""
        import httpx

        from assets.activities.rules import activity_key
        from assets.email.rules import notification_key
        from orchestration.message_keys import message_key
        from sandbox.conversations import ConversationStream
        from sandbox.email_events import EmailEventGenerator
        from sandbox.feedback_text import feedback_text, username

        self.rounds += 1
        now = datetime.now(UTC)
        stamp = now.strftime("%Y%m%dT%H%M%S")
        rng = random.Random(f"{DEMO_SEED}:{stamp}")
        counts: dict[str, int] = {}
        with httpx.Client(timeout=30) as client:
            client.post(
                f"{self.sandbox_url}/_sandbox/zendesk/default/changes",
                json={"new": 1, "updated": 2, "comments": 3},
            ).raise_for_status()
            counts["zendesk changes"] = 6
            counts["forum posts"] = len(self.sandbox_config.extra["discourse_forum"].add_posts(2))

            activities = [
                {
                    "type": "activity",
                    "activity_id": f"{DEMO_TENANT}-live-{stamp}-{n}",
                    "tenant_id": DEMO_TENANT,
                    "ticket_id": rng.randint(1, DEMO_TICKETS),
                    "actor_type": "user",
                    "actor_id": f"agent-{rng.randint(1, 5)}",
                    "action": rng.choice(("reply", "status_changed", "assigned", "note")),
                    "occurred_at": (now - timedelta(seconds=n)).isoformat(),
                }
                for n in range(4)
            ]
            counts["activities"] = self.queues.send(
                "activities", activities, dedup_key=activity_key
            )

            # seed: new emails each round (their ids come from it)
            emails = EmailEventGenerator(self.keys, seed=int(now.timestamp()))
            scenario = emails.scenario([DEMO_TENANT], 3, now, days=1, never_sent=0, late_share=0.0)
            self.queues.send("email_sent", scenario.notifications, dedup_key=notification_key)
            for request in scenario.requests:
                client.post(
                    f"{self.webhooks_url}{request.path}",
                    headers=request.headers,
                    content=request.body,
                ).raise_for_status()
            counts["sent emails"] = len(scenario.notifications)
            counts["signed webhooks"] = len(scenario.requests)

            items = []
            for n in range(2):
                piece = feedback_text(rng)
                items.append(
                    {
                        "external_id": f"demo-live-{stamp}-{n}",
                        "text": piece.text,
                        "author": username(rng),
                        "created_at": now.isoformat(),
                        "rating": None,
                        "metadata": {"channel": "in-app"},
                    }
                )
            client.post(
                f"{self.webhooks_url}/webhooks/feedback/{DEMO_WORKSPACE}",
                json=items,
                headers={"Authorization": f"Bearer {self.webhook_token}"},
            ).raise_for_status()
            counts["pushed feedback"] = len(items)

        # the demo's origins come from its seed modulo 1000; a new multiple of 1000 on top gives
        # the same origins and new customers, threads and message ids
        stream = ConversationStream(
            seed=DEMO_SEED + 1000 * int(now.timestamp()),
            tenants=(DEMO_TENANT,),
            origins_per_tenant=6,
            authors=min(3, DEMO_CONVERSATION_AUTHORS),
            messages=8,
            start=now - timedelta(minutes=5),
            days=4 / (24 * 60),
            duplicate_rate=0.0,
            removed_rate=0.0,
            hidden_rate=0.0,
        )
        counts["channel messages"] = self.queues.send(
            "messages", stream.messages(), dedup_key=message_key("messages")
        )
        return counts


def start_living_demo(
    settings: Settings, database_url: str, interval: float = DEFAULT_INTERVAL_SECONDS
) -> Callable[[], None] | None:
    """After a demo: the sandbox at the demo's address, the webhook service and the generator,
    in background threads; returns the function that stops them. Without a demo: None."""
    if not demo_was_run(settings):
        return None
    from assets.feedback.store import get_workspace, issue_webhook_token
    from resources.runtime import make_queues
    from resources.warehouse import get_pool
    from sandbox.email_events import ProviderKeys
    from webhooks.app import create_app, serve_in_thread

    stack = contextlib.ExitStack()
    config = demo_sandbox(demo_now())
    sandbox_url, stop_sandbox = serve_sandbox(config, sandbox_port_file(settings))
    stack.callback(stop_sandbox)
    keys = ProviderKeys.generate()
    webhooks_url = stack.enter_context(serve_in_thread(create_app(webhook_service(keys))))
    with get_pool(database_url).connection() as conn:
        point_demo_at(conn, sandbox_url)
        token = issue_webhook_token(conn, get_workspace(conn, DEMO_WORKSPACE).workspace_id)
    generator = Generator(
        sandbox_url=sandbox_url,
        webhooks_url=webhooks_url,
        sandbox_config=config,
        keys=keys,
        webhook_token=token,
        queues=make_queues(settings),
        interval=interval,
    )
    thread = threading.Thread(target=generator.run, name="living-demo", daemon=True)
    thread.start()

    def stop() -> None:
        generator.stop_event.set()
        thread.join(timeout=30)
        stack.close()

    print(
        f"living demo: sandbox {sandbox_url}, webhooks {webhooks_url}, "
        f"a round of events every {interval:g}s",
        flush=True,
    )
    return stop
