"""Deterministic, realistic social-channel message streams for the demo, tests and benchmarks.

`ConversationStream` plays a support team's channels for a few days: customers of one or more
tenants write on Facebook, Instagram, X, WhatsApp, LinkedIn and mail origins, in several
languages and tones (English reuses `sandbox.feedback_text`); agents reply, leave private notes,
a bot answers and suggests replies; Facebook reviews and mail satisfaction surveys carry ratings;
some messages have attachments. Each customer's thread is a series of sessions (a question, the
answers, maybe a follow-up and a thank-you), days apart.

Delivery has the mess real channel webhooks produce, all bounded and reproducible per seed:

- duplicates: the same body (same `message_id`, or `event_id` for moderation events) re-sent,
  some right away, some hundreds of messages later;
- reordering: every message is delivered less than `reorder_window` positions away from its
  `sent_at` order, and an agent's or the bot's message never before the customer message that
  opened its session (a reply cannot name a conversation that does not exist yet);
- moderation: `message_removed` and `message_hidden` (some later `message_unhidden`) events,
  always delivered after the message they are about.

`messages()` gives the bodies of queue `messages` in delivery order; `truth()` says what was
generated (every unique message, its thread, what is out of order, removed or hidden) so a test
can compute the expected result without asking the pipeline. Ticket sequences are assigned by
the platform, so actions on tickets (`conversation_events`) come in a second phase:
`events_for(tickets, now)` for the (tenant, sequence) pairs the caller read back, or `events()`
for the first tickets as `predicted_first_tickets()` expects them when one drain consumes the
queue in delivery order.
"""

from __future__ import annotations

import gc
import random
import time
import unicodedata
from bisect import bisect
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from itertools import accumulate
from typing import Any, NamedTuple

from sandbox.feedback_text import FIRST_NAMES, FOREIGN, LAST_NAMES, TOPICS, compose

CHANNELS = ("facebook", "instagram", "x", "whatsapp", "linkedin", "mail")
# Facebook page reviews and mail satisfaction surveys carry a 1-5 rating.
REVIEW_CHANNELS = frozenset({"facebook", "mail"})
GROUPS = ("tier1", "billing", "social", "tier2")
TAGS = ("vip", "refund", "bug", "churn-risk", "how-to", "outage", "feature-request", "invoice")
LANGUAGE_WEIGHTS = {"en": 0.7, "de": 0.08, "es": 0.08, "fr": 0.06, "it": 0.04, "pt": 0.04}
# How often customers use each channel (relative).
CHANNEL_WEIGHTS = {
    "facebook": 3.0,
    "instagram": 2.5,
    "x": 2.0,
    "whatsapp": 3.0,
    "linkedin": 0.7,
    "mail": 2.0,
}
AGENT_NAMES = (
    "Maya Patel",
    "Luca Bianchi",
    "Sofia Hernández",
    "Jonas Weber",
    "Chloé Martin",
    "Tom Becker",
    "Aisha Bello",
    "Kenji Sato",
    "Rita Costa",
    "Omar Haddad",
)
# First names by language; English adds the feedback generator's names.
NAMES = {
    "en": ["Ann", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Harry", "Ivy", "Jack"]
    + [n.capitalize() for n in FIRST_NAMES],
    "de": ["Anna", "Lukas", "Lena", "Felix", "Marie", "Jonas", "Hannah", "Paul"],
    "es": ["Lucía", "Mateo", "Sofía", "Hugo", "Martina", "Pablo", "Carmen", "Diego"],
    "fr": ["Camille", "Louis", "Léa", "Jules", "Manon", "Hugo", "Inès", "Théo"],
    "it": ["Giulia", "Marco", "Chiara", "Luca", "Sara", "Matteo", "Elena", "Andrea"],
    "pt": ["Ana", "João", "Beatriz", "Pedro", "Mariana", "Rafael", "Inês", "Tiago"],
}
SURNAMES = [n.capitalize() for n in LAST_NAMES] + ["Brown", "Schmidt", "López", "Moreau"]
PHONE_PREFIX = {"en": "+44", "de": "+49", "es": "+34", "fr": "+33", "it": "+39", "pt": "+351"}
MAIL_DOMAIN = {
    "en": "example.com",
    "de": "beispiel.de",
    "es": "ejemplo.es",
    "fr": "exemple.fr",
    "it": "esempio.it",
    "pt": "exemplo.pt",
}

# --- text -----------------------------------------------------------------------------------------
# English openings come from sandbox.feedback_text; the other languages have their own phrases
# about the same themes.
TOPIC_NOUNS = {
    "de": {
        "billing": "die Rechnung",
        "login": "die Anmeldung",
        "export": "der CSV-Export",
        "mobile": "die App",
        "integrations": "die Slack-Integration",
        "performance": "das Dashboard",
    },
    "es": {
        "billing": "la factura",
        "login": "el inicio de sesión",
        "export": "la exportación CSV",
        "mobile": "la app",
        "integrations": "la integración con Slack",
        "performance": "el panel",
    },
    "fr": {
        "billing": "la facture",
        "login": "la connexion",
        "export": "l'export CSV",
        "mobile": "l'application",
        "integrations": "l'intégration Slack",
        "performance": "le tableau de bord",
    },
    "it": {
        "billing": "la fattura",
        "login": "l'accesso",
        "export": "l'esportazione CSV",
        "mobile": "l'app",
        "integrations": "l'integrazione con Slack",
        "performance": "la dashboard",
    },
    "pt": {
        "billing": "a fatura",
        "login": "o login",
        "export": "a exportação CSV",
        "mobile": "o aplicativo",
        "integrations": "a integração com o Slack",
        "performance": "o painel",
    },
}
OPENINGS = {
    "de": {
        "negative": [
            "{T} funktioniert schon wieder nicht, das ist wirklich ärgerlich.",
            "Seit dem Update ist {t} kaputt und niemand antwortet.",
            "Wir warten seit Tagen auf eine Lösung für {t}. Sehr enttäuschend.",
        ],
        "neutral": [
            "Kurze Frage zu {t}: wo finde ich die Einstellungen?",
            "Wie richte ich {t} für ein zweites Team ein?",
        ],
        "positive": [
            "Danke, {t} funktioniert jetzt einwandfrei!",
            "Super Service, das Problem mit {t} wurde sofort gelöst.",
        ],
    },
    "es": {
        "negative": [
            "{T} no funciona otra vez, es muy frustrante.",
            "Desde la actualización {t} no funciona y nadie responde.",
            "Llevamos días esperando una solución para {t}. Muy decepcionante.",
        ],
        "neutral": [
            "Una pregunta sobre {t}: ¿dónde cambio la configuración?",
            "¿Cómo configuro {t} para un segundo equipo?",
        ],
        "positive": [
            "Gracias, {t} ya funciona perfectamente.",
            "Excelente servicio, resolvieron el problema con {t} enseguida.",
        ],
    },
    "fr": {
        "negative": [
            "{T} ne fonctionne toujours pas, c'est vraiment pénible.",
            "Depuis la mise à jour, {t} ne marche plus et personne ne répond.",
            "Nous attendons depuis des jours une solution pour {t}. Très déçus.",
        ],
        "neutral": [
            "Petite question sur {t} : où se trouvent les réglages ?",
            "Comment configurer {t} pour une deuxième équipe ?",
        ],
        "positive": [
            "Merci, {t} fonctionne parfaitement maintenant !",
            "Super service, le problème avec {t} a été résolu tout de suite.",
        ],
    },
    "it": {
        "negative": [
            "{T} non funziona di nuovo, è davvero frustrante.",
            "Dopo l'aggiornamento {t} non funziona più e nessuno risponde.",
            "Aspettiamo da giorni una soluzione per {t}. Molto deludente.",
        ],
        "neutral": [
            "Domanda su {t}: dove trovo le impostazioni?",
            "Come configuro {t} per un secondo team?",
        ],
        "positive": [
            "Grazie, ora {t} funziona perfettamente!",
            "Ottimo servizio, avete risolto il problema con {t} subito.",
        ],
    },
    "pt": {
        "negative": [
            "{T} parou de funcionar de novo, muito frustrante.",
            "Depois da atualização {t} não funciona e ninguém responde.",
            "Esperamos há dias uma solução para {t}. Muito decepcionante.",
        ],
        "neutral": [
            "Uma dúvida sobre {t}: onde altero as configurações?",
            "Como configuro {t} para uma segunda equipe?",
        ],
        "positive": [
            "Obrigado, {t} agora funciona perfeitamente!",
            "Ótimo atendimento, resolveram o problema com {t} na hora.",
        ],
    },
}
# A customer's later messages in a session: chasing (negative), details (neutral), thanks.
FOLLOW_UPS = {
    "en": {
        "negative": [
            "Any update? Still waiting.",
            "Hello?? Nobody has answered in hours.",
            "This is still not fixed, really disappointed.",
            "Third time I am asking, this is ridiculous.",
        ],
        "neutral": [
            "I sent the screenshot you asked for.",
            "My order number is {order}.",
            "It happens on both the web and the app.",
        ],
        "positive": [
            "Thank you so much, it works now!",
            "Perfect, thanks for the quick help.",
            "All good now, great support as always.",
        ],
    },
    "de": {
        "negative": ["Gibt es schon Neuigkeiten? Wir warten immer noch.", "Immer noch kaputt."],
        "neutral": ["Meine Bestellnummer ist {order}.", "Ich habe den Screenshot geschickt."],
        "positive": ["Vielen Dank, jetzt klappt alles!", "Perfekt, danke für die schnelle Hilfe."],
    },
    "es": {
        "negative": ["¿Alguna novedad? Seguimos esperando.", "Sigue sin funcionar."],
        "neutral": ["Mi número de pedido es {order}.", "Ya envié la captura de pantalla."],
        "positive": ["¡Muchas gracias, ya funciona!", "Perfecto, gracias por la ayuda rápida."],
    },
    "fr": {
        "negative": ["Des nouvelles ? Nous attendons toujours.", "Toujours pas réglé."],
        "neutral": ["Mon numéro de commande est {order}.", "J'ai envoyé la capture d'écran."],
        "positive": ["Merci beaucoup, tout fonctionne !", "Parfait, merci pour l'aide rapide."],
    },
    "it": {
        "negative": ["Novità? Stiamo ancora aspettando.", "Ancora non funziona."],
        "neutral": ["Il mio numero d'ordine è {order}.", "Ho inviato lo screenshot."],
        "positive": ["Grazie mille, ora funziona!", "Perfetto, grazie per l'aiuto veloce."],
    },
    "pt": {
        "negative": ["Alguma novidade? Continuamos esperando.", "Continua sem funcionar."],
        "neutral": ["Meu número de pedido é {order}.", "Já enviei a captura de tela."],
        "positive": ["Muito obrigado, agora funciona!", "Perfeito, obrigado pela ajuda rápida."],
    },
}
AGENT_REPLIES = {
    "en": [
        "Hi {name}, thanks for reaching out. I'm looking into {t} right now.",
        "Sorry for the trouble, {name}. We've fixed {t}, could you try again?",
        "Hi {name}, could you send us a screenshot of {t}?",
        "Thanks for your patience, {name}. {T} should work again now.",
        "Hi {name}, I've passed {t} on to our engineers and will update you today.",
    ],
    "de": [
        "Hallo {name}, danke für Ihre Nachricht. Ich schaue mir {t} sofort an.",
        "Entschuldigen Sie die Umstände, {name}. Könnten Sie es bitte noch einmal versuchen?",
    ],
    "es": [
        "Hola {name}, gracias por escribirnos. Estamos revisando {t}.",
        "Disculpa las molestias, {name}. ¿Puedes intentarlo de nuevo?",
    ],
    "fr": [
        "Bonjour {name}, merci pour votre message. Nous regardons {t} tout de suite.",
        "Désolés pour la gêne, {name}. Pouvez-vous réessayer ?",
    ],
    "it": [
        "Ciao {name}, grazie per averci scritto. Stiamo verificando {t}.",
        "Ci scusiamo per il disagio, {name}. Può riprovare?",
    ],
    "pt": [
        "Olá {name}, obrigado pelo contato. Estamos verificando {t}.",
        "Desculpe o transtorno, {name}. Pode tentar novamente?",
    ],
}
BOT_MESSAGES = {
    "en": [
        "Thanks for your message! A member of our team will reply shortly.",
        "Hi! I'm the virtual assistant. An agent will take a look at your request soon.",
    ],
    "de": ["Danke für Ihre Nachricht! Ein Mitglied unseres Teams meldet sich in Kürze."],
    "es": ["¡Gracias por tu mensaje! Un miembro del equipo te responderá en breve."],
    "fr": ["Merci pour votre message ! Un membre de notre équipe vous répondra rapidement."],
    "it": ["Grazie per il messaggio! Un membro del team ti risponderà a breve."],
    "pt": ["Obrigado pela mensagem! Um membro da equipe vai responder em breve."],
}
PRIVATE_NOTES = [
    "Customer is on the annual plan, refund approved by finance.",
    "Checked the logs: {t} failed with a timeout this morning.",
    "Escalated to tier 2, linked to JIRA-{n}.",
    "Same issue as last week, see ticket #{n}.",
    "VIP account, please answer within the hour.",
    "Known bug with {t}, fix scheduled for the next release.",
]
MAIL_FRAME = {
    "en": ("Hello,", "Best regards,"),
    "de": ("Guten Tag,", "Viele Grüße,"),
    "es": ("Hola,", "Saludos,"),
    "fr": ("Bonjour,", "Cordialement,"),
    "it": ("Buongiorno,", "Cordiali saluti,"),
    "pt": ("Olá,", "Atenciosamente,"),
}
ATTACHMENTS = (
    ("screenshot.png", "image/png", 40_000, 1_800_000),
    ("photo.jpg", "image/jpeg", 80_000, 3_500_000),
    ("invoice.pdf", "application/pdf", 30_000, 400_000),
    ("screen-recording.mp4", "video/mp4", 900_000, 25_000_000),
)
AGENT_ATTACHMENTS = (("setup-guide.pdf", "application/pdf", 120_000, 900_000),)
CDN = {
    "facebook": "scontent.fbcdn.example",
    "instagram": "cdninstagram.example",
    "x": "pbs.twimg.example",
    "whatsapp": "mmg.whatsapp.example",
    "linkedin": "media.licdn.example",
    "mail": "attachments.mail.example",
}
MESSAGE_ID_PREFIX = {
    "facebook": "fb-",
    "instagram": "ig-",
    "x": "x-",
    "whatsapp": "wamid.",
    "linkedin": "urn:li:comment:",
    "mail": "mail-",
}


def iso(moment: datetime) -> str:
    """`2026-11-29T10:00:00Z`: the timestamp format of the queue bodies."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def _without_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many objects that are not garbage.

    It would rescan them all again and again: a third of the time at 200,000 messages.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _ascii(name: str) -> str:
    """`López` -> `lopez`: handles and mailbox names are ASCII."""
    return unicodedata.normalize("NFKD", name.lower()).encode("ascii", "ignore").decode()


_HOUR_PREFIX: dict[int, str] = {}


def _iso_epoch(seconds: float) -> str:
    """`iso` of a Unix time in whole seconds, fast: the hour's prefix is formatted once."""
    whole = int(seconds)
    hour, rest = divmod(whole, 3600)
    prefix = _HOUR_PREFIX.get(hour)
    if prefix is None:
        prefix = _HOUR_PREFIX[hour] = time.strftime("%Y-%m-%dT%H:", time.gmtime(hour * 3600))
    return f"{prefix}{rest // 60:02d}:{rest % 60:02d}Z"


def _epoch(moment: str) -> float:
    """The Unix time of an `iso` timestamp."""
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def _pick(rng: random.Random, options: Sequence[Any]) -> Any:
    """`rng.choice`, about three times faster (the generator makes millions of choices)."""
    return options[int(rng.random() * len(options))]


@dataclass(frozen=True)
class OriginSpec:
    """An origin to register before the stream: `origins add TENANT NAME --channel C --ref R`."""

    tenant_id: str
    name: str
    channel: str
    ref: str


@dataclass(frozen=True)
class Agent:
    tenant_id: str
    external_id: str
    name: str
    group: str


class ThreadKey(NamedTuple):
    """A thread: one customer (author external id) on one origin (its ref) of a tenant."""

    tenant_id: str
    origin: str
    customer: str


class PlannedMessage(NamedTuple):
    """One unique message as generated (before duplication and reordering)."""

    message_id: str
    tenant_id: str
    origin: str  # origin ref
    channel: str
    customer: str  # the thread's customer external id
    author: str  # author external id: the customer, an agent or the tenant's bot
    kind: str
    sent_at: str  # ISO, second precision; strictly increasing within a thread
    session: int  # 0 for the thread's first session, 1 for the next ...
    language: str
    tone: str | None  # what a customer meant: positive | neutral | negative (None otherwise)
    rating: int | None
    topic: str

    @property
    def thread(self) -> ThreadKey:
        return ThreadKey(self.tenant_id, self.origin, self.customer)


@dataclass(frozen=True)
class StreamTruth:
    """What a stream contains, for tests to build their expectations from."""

    planned: tuple[PlannedMessage, ...]  # every unique message, in sent_at order
    deliveries: int  # bodies of queue `messages` (messages and moderation events)
    duplicates: int  # bodies delivered again with the same idempotency id
    out_of_order: frozenset[str]  # delivered after a later-sent message of the same thread
    removed: frozenset[str]  # message ids with a message_removed event
    hidden: frozenset[str]  # message ids hidden at the end (hidden, not unhidden after)
    unhidden: frozenset[str]  # message ids hidden, then unhidden

    def threads(self) -> dict[ThreadKey, list[PlannedMessage]]:
        """Each thread's messages in sent_at order."""
        threads: dict[ThreadKey, list[PlannedMessage]] = {}
        for message in self.planned:
            threads.setdefault(message.thread, []).append(message)
        return threads

    def messages_per_thread(self) -> Counter[ThreadKey]:
        """Unique messages per (tenant, origin, author)."""
        return Counter(message.thread for message in self.planned)

    def kinds(self) -> Counter[str]:
        return Counter(message.kind for message in self.planned)


class _Weighted:
    """A weighted choice with its cumulative weights computed once (`random.choices` redoes it)."""

    def __init__(self, weights: Mapping[Any, float]) -> None:
        self.values = list(weights)
        self.cumulative = list(accumulate(weights.values()))

    def pick(self, rng: random.Random) -> Any:
        return self.values[bisect(self.cumulative, rng.random() * self.cumulative[-1])]


TOPIC_NAMES = sorted(TOPICS)
_LANGUAGES = _Weighted(LANGUAGE_WEIGHTS)
_OPENING_TONES = _Weighted({"negative": 45, "neutral": 35, "positive": 20})
_CLOSING_TONES = _Weighted({"positive": 7, "negative": 3})
_REQUESTED_STATES = _Weighted(
    {"working": 10, "pending": 25, "solved": 45, "closed": 5, "followup": 15}
)


class ConversationStream:
    """A reproducible stream of channel messages of `authors` customers, `messages` in all.

    `messages` counts unique messages of every kind (customer, agent, bot); duplicates and
    moderation events come on top. `authors` customers each get a thread on one origin of
    their tenant; `multi_origin_share` of them also write on a second origin of the same channel
    (when the tenant has one), with the same external id: a second thread. Every thread starts
    with a customer message. Every message is sent within [`start`, `start` + `days`).
    """

    def __init__(
        self,
        *,
        seed: int = 7,
        tenants: Iterable[str] = ("acme",),
        origins_per_tenant: int = 3,
        authors: int = 200,
        messages: int = 2000,
        start: datetime = datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        days: float = 7.0,
        duplicate_rate: float = 0.03,
        reorder_window: int = 8,
        removed_rate: float = 0.004,
        hidden_rate: float = 0.008,
        unhide_share: float = 0.4,
        rating_rate: float = 0.3,
        attachment_rate: float = 0.08,
        agents_per_tenant: int = 6,
        multi_origin_share: float = 0.05,
    ) -> None:
        self.seed = seed
        self.tenants = tuple(tenants)
        if not self.tenants or len(set(self.tenants)) != len(self.tenants):
            raise ValueError("tenants must be distinct and at least one")
        if origins_per_tenant < 1 or authors < 1 or messages < 0 or reorder_window < 0:
            raise ValueError("need at least one origin and one author, and non-negative counts")
        self.origins_per_tenant = origins_per_tenant
        self.author_count = authors
        self.message_count = messages
        self.start = start.astimezone(UTC)
        self.days = days
        self.duplicate_rate = duplicate_rate
        self.reorder_window = reorder_window
        self.removed_rate = removed_rate
        self.hidden_rate = hidden_rate
        self.unhide_share = unhide_share
        self.rating_rate = rating_rate
        self.attachment_rate = attachment_rate
        self.agents_per_tenant = agents_per_tenant
        self.multi_origin_share = multi_origin_share

    @property
    def end(self) -> datetime:
        """Every message is sent before this: `start` + `days`."""
        return self.start + timedelta(days=self.days)

    def __repr__(self) -> str:
        return (
            f"ConversationStream(seed={self.seed}, tenants={self.tenants}, "
            f"authors={self.author_count}, messages={self.message_count})"
        )

    # --- the set-up the platform needs before the stream ------------------------------------------

    @cached_property
    def _origins(self) -> tuple[OriginSpec, ...]:
        origins = []
        for t, tenant in enumerate(self.tenants):
            seen: Counter[str] = Counter()
            for j in range(self.origins_per_tenant):
                channel = CHANNELS[(t + j) % len(CHANNELS)]
                seen[channel] += 1
                k = seen[channel]
                number = (self.seed % 1000) * 10_000 + t * 100 + j
                suffix = "" if k == 1 else f" {k}"
                ref = {
                    "facebook": f"fb-page-{1_000_000_000 + number}",
                    "instagram": f"ig-account-{17_841_400_000 + number}",
                    "x": f"x-@{tenant}_support{'' if k == 1 else k}-{number}",
                    "whatsapp": f"wa-+1555{number:07d}",
                    "linkedin": f"urn:li:organization:{70_000_000 + number}",
                    "mail": f"mail-support{'' if k == 1 else k}@{tenant}-{number}.example",
                }[channel]
                label = {"x": "X", "linkedin": "LinkedIn", "whatsapp": "WhatsApp"}.get(
                    channel, channel.capitalize()
                )
                name = f"{tenant.capitalize()} {label}{suffix}"
                origins.append(OriginSpec(tenant, name, channel, ref))
        return tuple(origins)

    def origins(self) -> list[OriginSpec]:
        """The origins to register (tenant, name, channel, ref), in a stable order."""
        return list(self._origins)

    @cached_property
    def _agents(self) -> dict[str, tuple[Agent, ...]]:
        agents = {}
        for t, tenant in enumerate(self.tenants):
            agents[tenant] = tuple(
                Agent(
                    tenant,
                    f"{tenant}-agent-{i + 1}",
                    AGENT_NAMES[(t + i) % len(AGENT_NAMES)],
                    GROUPS[i % len(GROUPS)],
                )
                for i in range(max(self.agents_per_tenant, 1))
            )
        return agents

    def agents(self, tenant_id: str) -> tuple[Agent, ...]:
        """The tenant's agents who write replies and notes (and are named by assignments)."""
        return self._agents[tenant_id]

    @staticmethod
    def bot_id(tenant_id: str) -> str:
        """The author external id of the tenant's AI assistant."""
        return f"{tenant_id}-assistant"

    # --- generation ---------------------------------------------------------------------------

    @cached_property
    def _generated(self) -> tuple[list[dict[str, Any]], StreamTruth]:
        with _without_gc():
            return _Generator(self).run()

    def messages(self) -> list[dict[str, Any]]:
        """The bodies of queue `messages` in delivery order (duplicates and reordering included).

        The list is built once per stream; each call returns a new list of the same dicts.
        """
        return list(self._generated[0])

    def truth(self) -> StreamTruth:
        return self._generated[1]

    def predicted_first_tickets(self) -> dict[str, list[ThreadKey]]:
        """Per tenant, the threads in the order their first ticket is created.

        That is the order of each thread's first delivered customer message, so ticket
        `sequence` n of a tenant is the n-th thread here, provided one drain consumes the queue in
        delivery order, every origin is enabled and no ticket closes meanwhile.
        """
        order: dict[str, list[ThreadKey]] = {tenant: [] for tenant in self.tenants}
        seen: set[ThreadKey] = set()
        for body in self._generated[0]:
            if body["type"] != "message" or body["kind"] != "customer":
                continue
            key = ThreadKey(body["tenant_id"], body["origin"], body["author"]["external_id"])
            if key not in seen:
                seen.add(key)
                order[key.tenant_id].append(key)
        return order

    # --- actions on tickets (second phase) --------------------------------------------------------

    def events_for(
        self, tickets: Iterable[tuple[str, int]], now: datetime, wave: int = 0
    ) -> list[dict[str, Any]]:
        """`conversation_events` bodies for the given (tenant_id, sequence) tickets, as of `now`.

        Per ticket, in this order and each with some probability: an `assign` (agent and/or
        group, by an agent or a routing rule), a `set_metadata` (tags, topic, custom fields), an
        `escalate` and one `set_state` (solved, pending, followup with `until` 1-48 h after
        `now`, working or closed). Every event occurred in the hour before `now`; a ticket's
        events are in time order; tickets interleave; `duplicate_rate` of the bodies are sent
        again a little later. What a ticket gets, and its event ids, depend only on the seed,
        the ticket and `wave` (not on `now` or the other tickets): the same call an hour later
        re-sends the same events; another `wave` is a new round of actions.
        """
        with _without_gc():
            return self._events_for(tickets, now.astimezone(UTC), wave)

    def _events_for(
        self, tickets: Iterable[tuple[str, int]], now: datetime, wave: int
    ) -> list[dict[str, Any]]:
        # (delivery time, tenant, sequence, position within the ticket, body)
        planned: list[tuple[float, str, int, int, dict[str, Any]]] = []
        end = now.timestamp()
        for tenant_id, sequence in tickets:
            if tenant_id not in self._agents:
                raise ValueError(f"tenant {tenant_id!r} is not one of this stream's tenants")
            rng = random.Random(f"{self.seed}:{tenant_id}:{sequence}:{wave}")
            bodies = self._ticket_actions(rng, tenant_id, int(sequence), now)
            # spread over the last hour, ending at now
            offsets = sorted((rng.uniform(60, 3600) for _ in bodies), reverse=True)
            for position, (offset, body) in enumerate(zip(offsets, bodies, strict=True)):
                occurred = end - round(offset)
                body["occurred_at"] = _iso_epoch(occurred)
                planned.append((occurred, tenant_id, sequence, 2 * position, body))
                if rng.random() < self.duplicate_rate:
                    again = occurred + rng.uniform(1, 300)
                    planned.append((again, tenant_id, sequence, 2 * position + 1, _copy(body)))
        planned.sort(key=lambda item: item[:4])
        return [item[4] for item in planned]

    def events(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """`events_for` the first tickets as `predicted_first_tickets` expects them.

        `now` defaults to one minute after the last message was sent.
        """
        if now is None:
            last = max((m.sent_at for m in self.truth().planned), default=iso(self.start))
            now = datetime.fromisoformat(last.replace("Z", "+00:00")) + timedelta(minutes=1)
        tickets = [
            (tenant, n + 1)
            for tenant, threads in self.predicted_first_tickets().items()
            for n in range(len(threads))
        ]
        return self.events_for(tickets, now)

    def _ticket_actions(
        self, rng: random.Random, tenant_id: str, sequence: int, now: datetime
    ) -> list[dict[str, Any]]:
        agents = self._agents[tenant_id]
        agent = rng.choice(agents)
        bodies: list[dict[str, Any]] = []

        def event(kind: str, by_rule: bool, **fields: Any) -> None:
            actor = (
                {"type": "rule", "id": rng.choice(("auto-assign", "vip-routing", "sla-breach"))}
                if by_rule
                else {"type": "agent", "id": agent.external_id}
            )
            bodies.append(
                {
                    "type": kind,
                    "event_id": f"ce-{rng.getrandbits(64):016x}",
                    "tenant_id": tenant_id,
                    "sequence": sequence,
                    "actor": actor,
                    **fields,
                }
            )

        if rng.random() < 0.6:
            roll = rng.random()
            target = (
                {"agent": agent.external_id, "group": agent.group}
                if roll < 0.5
                else {"agent": agent.external_id}
                if roll < 0.75
                else {"group": rng.choice(GROUPS)}
            )
            event("assign", rng.random() < 0.5, **target)
        if rng.random() < 0.4:
            event(
                "set_metadata",
                False,
                tags=sorted(rng.sample(TAGS, rng.randint(1, 3))),
                topic=rng.choice(TOPIC_NAMES),
                custom_fields={
                    "plan": rng.choice(("free", "pro", "enterprise")),
                    "order_id": f"A-{rng.randrange(10_000, 99_999)}",
                },
            )
        if rng.random() < 0.1:
            fields: dict[str, Any] = {"priority": rng.choice(("high", "urgent"))}
            if rng.random() < 0.5:
                fields["group"] = "tier2"
            event("escalate", rng.random() < 0.5, **fields)
        if rng.random() < 0.7:
            state = _REQUESTED_STATES.pick(rng)
            fields = {"state": state}
            if state == "followup":
                fields["until"] = iso(now + timedelta(hours=rng.randint(1, 48)))
            event("set_state", False, **fields)
        return bodies


def queue_changed_event(
    tenant_id: str, queue: str, occurred_at: datetime, event_id: str | None = None
) -> dict[str, Any]:
    """The `conversation_events` body saying a work queue's definition changed."""
    when = iso(occurred_at)
    return {
        "type": "queue_changed",
        "event_id": event_id or f"queue-changed:{tenant_id}:{queue}:{when}",
        "tenant_id": tenant_id,
        "queue": queue,
        "occurred_at": when,
    }


class _Customer(NamedTuple):
    external_id: str
    name: str | None
    first_name: str
    language: str


# (sent epoch, creation index, message, body, creation index of the session's opening message)
_Planned = tuple[float, int, PlannedMessage, dict[str, Any], int]


class _Generator:
    """One pass of generation; `run()` returns (delivered bodies, truth)."""

    def __init__(self, stream: ConversationStream) -> None:
        self.s = stream
        self.rng = random.Random(stream.seed)
        # distinct ids across seeds and tenants: the queue's idempotency ids are global
        self.id_base = self.rng.randrange(10**6, 10**7) * 10**8
        self.next_id = 0

    def message_id(self, channel: str) -> str:
        self.next_id += 1
        return f"{MESSAGE_ID_PREFIX[channel]}{self.id_base + self.next_id}"

    def customer(self, channel: str, n: int) -> _Customer:
        rng = self.rng
        language = _LANGUAGES.pick(rng)
        first = _pick(rng, NAMES[language])
        last = _pick(rng, SURNAMES)
        number = self.id_base + n
        external_id = {
            "facebook": str(6_100_000_000_000_000 + number),
            "instagram": str(17_800_000_000_000_000 + number),
            "x": str(1_400_000_000_000_000_000 + number),
            "whatsapp": f"{PHONE_PREFIX[language]}7{number % 10**9:09d}",
            "linkedin": f"urn:li:person:{number:x}",
            "mail": f"{_ascii(first)}.{_ascii(last)}.{n}@{MAIL_DOMAIN[language]}",
        }[channel]
        if channel == "x":
            name = f"@{_ascii(first)}_{_ascii(last)}{n % 100}"
        else:
            name = f"{first} {last}"
        return _Customer(external_id, name if rng.random() < 0.9 else None, first, language)

    def run(self) -> tuple[list[dict[str, Any]], StreamTruth]:
        s, rng = self.s, self.rng
        origins_by_tenant: dict[str, list[OriginSpec]] = {}
        for origin in s.origins():
            origins_by_tenant.setdefault(origin.tenant_id, []).append(origin)
        pick_origin = {
            tenant: _Weighted({o: CHANNEL_WEIGHTS[o.channel] for o in candidates})
            for tenant, candidates in origins_by_tenant.items()
        }

        # threads: (origin, customer); each customer on one origin, a few on a second one
        threads: list[tuple[OriginSpec, _Customer]] = []
        for n in range(s.author_count):
            tenant = s.tenants[n % len(s.tenants)]
            candidates = origins_by_tenant[tenant]
            origin = pick_origin[tenant].pick(rng)
            customer = self.customer(origin.channel, n)
            threads.append((origin, customer))
            if rng.random() < s.multi_origin_share:
                others = [o for o in candidates if o.channel == origin.channel and o != origin]
                if others:
                    threads.append((_pick(rng, others), customer))

        # every thread gets at least one message, the rest go to chatty customers (heavy tail)
        quota = [0] * len(threads)
        for i in range(min(len(threads), s.message_count)):
            quota[i] = 1
        extra = s.message_count - sum(quota)
        if extra > 0:
            weights = [rng.paretovariate(1.5) for _ in threads]
            for i in rng.choices(range(len(threads)), weights=weights, k=extra):
                quota[i] += 1

        span = s.days * 86_400
        epoch0 = s.start.timestamp()
        planned: list[_Planned] = []
        for index, (origin, customer) in enumerate(threads):
            if quota[index]:
                self.thread(origin, customer, quota[index], epoch0, span, planned)

        planned.sort(key=lambda item: (item[0], item[1]))
        return self.deliver(planned)

    def thread(
        self,
        origin: OriginSpec,
        customer: _Customer,
        quota: int,
        start: float,
        span: float,
        out: list[_Planned],
    ) -> None:
        """A customer's sessions on one origin, `quota` messages in all, within the span."""
        rng = self.rng
        uniform = rng.uniform
        agent = _pick(rng, self.s.agents(origin.tenant_id))
        # first the script with offsets from the thread's first message ...
        steps: list[tuple[float, str, int, str, str | None, bool]] = []
        offset = 0.0
        session = 0
        remaining = quota
        while remaining > 0:
            topic = _pick(rng, TOPIC_NAMES)
            script = self.session_script()[:remaining]
            remaining -= len(script)
            opening_tone = _OPENING_TONES.pick(rng)
            last_position = len(script) - 1
            for position, kind in enumerate(script):
                if position == 0:
                    tone: str | None = opening_tone
                elif kind == "ai_suggestion" or kind == "ai_message":
                    offset += uniform(3, 40)
                    tone = None
                elif kind == "private_note":
                    offset += uniform(60, 1200)
                    tone = None
                elif kind == "agent_reply":
                    offset += min(rng.lognormvariate(7.3, 1.1), 8 * 3600)  # ~25 min median
                    tone = None
                else:  # the customer again: chasing, details, or a closing word
                    offset += uniform(180, 6 * 3600)
                    if position == last_position and position > 2:
                        tone = _CLOSING_TONES.pick(rng)
                    else:
                        tone = "negative" if opening_tone == "negative" else "neutral"
                steps.append((offset, kind, session, topic, tone, position == 0))
            session += 1
            offset += rng.expovariate(1 / (2 * 86_400)) + 3600
        # ... then placed in the span: a thread longer than the span is compressed into it
        length = steps[-1][0]
        scale = min(1.0, (span - len(steps)) / length) if length > 0 else 1.0
        first = start + rng.random() * max(span - len(steps) - length * scale, 0.0)
        anchor_at = len(out)
        last = 0.0
        for offset, kind, session, topic, tone, opening in steps:
            # whole seconds, strictly increasing within the thread: "in its place" is unambiguous
            sent = float(int(max(first + offset * scale, last + 1)))
            last = sent
            message, body = self.message(
                origin, customer, agent, kind, topic, tone, session, sent, opening
            )
            if opening:
                anchor_at = len(out)
            out.append((sent, len(out), message, body, anchor_at))

    def session_script(self) -> list[str]:
        """The kinds of one session: a customer question, then what the team and bot do."""
        rng = self.rng
        script = ["customer"]
        if rng.random() < 0.3:
            script.append("ai_message")
        if rng.random() < 0.35:
            script.append("ai_suggestion")
        if rng.random() < 0.2:
            script.append("private_note")
        if rng.random() < 0.9:
            script.append("agent_reply")
        while rng.random() < 0.45:
            script.append("customer")
            if rng.random() < 0.25:
                script.append("ai_suggestion")
            if rng.random() < 0.8:
                script.append("agent_reply")
        if rng.random() < 0.4:
            script.append("customer")  # thanks, or not
        return script

    def message(
        self,
        origin: OriginSpec,
        customer: _Customer,
        agent: Agent,
        kind: str,
        topic: str,
        tone: str | None,
        session: int,
        sent: float,
        opening: bool,
    ) -> tuple[PlannedMessage, dict[str, Any]]:
        rng, channel = self.rng, origin.channel
        language = customer.language
        rating = None
        attachments: list[dict[str, Any]] = []
        message_id = self.message_id(channel)
        if kind == "customer":
            author = {"external_id": customer.external_id}
            if customer.name is not None:
                author["name"] = customer.name
            text = self.customer_text(language, topic, tone or "neutral", opening)
            if channel == "x":
                handle = origin.ref.split("@", 1)[1].rsplit("-", 1)[0]
                text = f"@{handle} {text}"[:280]
            elif channel == "mail":
                hello, bye = MAIL_FRAME[language]
                text = f"{hello}\n\n{text}\n\n{bye}\n{customer.first_name}"
            if channel in REVIEW_CHANNELS and rng.random() < self.s.rating_rate:
                # facebook reviews open a conversation; mail surveys answer its end
                if (channel == "facebook") == opening:
                    rating = {
                        "positive": _pick(rng, (4, 5, 5)),
                        "neutral": _pick(rng, (3, 4)),
                        "negative": _pick(rng, (1, 1, 2)),
                    }[tone or "neutral"]
            if rng.random() < self.s.attachment_rate:
                attachments.append(self.attachment(_pick(rng, ATTACHMENTS), channel, message_id))
        elif kind in ("agent_reply", "private_note"):
            author = {"external_id": agent.external_id, "name": agent.name}
            if kind == "agent_reply":
                text = self.agent_text(language, topic, customer.first_name)
                if channel == "mail":
                    text = f"{text}\n\n{agent.name}\n{origin.tenant_id.capitalize()} Support"
                if rng.random() < self.s.attachment_rate / 2:
                    attachments.append(self.attachment(AGENT_ATTACHMENTS[0], channel, message_id))
            else:
                note = _pick(rng, PRIVATE_NOTES)
                text = note.format(t=TOPICS[topic][0], n=rng.randrange(1000, 9999))
        else:
            author = {"external_id": ConversationStream.bot_id(origin.tenant_id)}
            author["name"] = "Assistant"
            if kind == "ai_message":
                text = _pick(rng, BOT_MESSAGES[language])
            else:
                text = "Suggested reply: " + self.agent_text(language, topic, customer.first_name)
        sent_at = _iso_epoch(sent)
        body: dict[str, Any] = {
            "type": "message",
            "tenant_id": origin.tenant_id,
            "message_id": message_id,
            "origin": origin.ref,
            "author": author,
            "kind": kind,
            "text": text,
            "sent_at": sent_at,
        }
        if kind != "customer":
            body["customer"] = customer.external_id
        if attachments:
            body["attachments"] = attachments
        if rating is not None:
            body["rating"] = rating
        planned = PlannedMessage(
            message_id,
            origin.tenant_id,
            origin.ref,
            channel,
            customer.external_id,
            author["external_id"],
            kind,
            sent_at,
            session,
            language,
            tone if kind == "customer" else None,
            rating,
            topic,
        )
        return planned, body

    def customer_text(self, language: str, topic: str, tone: str, opening: bool) -> str:
        rng = self.rng
        if not opening:
            return _pick(rng, FOLLOW_UPS[language][tone]).format(
                order=f"#{rng.randrange(100_000, 999_999)}"
            )
        if language == "en":
            return compose(rng, topic, tone)
        if language in FOREIGN and tone == "negative" and rng.random() < 0.2:
            return _pick(rng, FOREIGN[language])  # the feedback generator's own sentences
        noun = TOPIC_NOUNS[language][topic]
        return _pick(rng, OPENINGS[language][tone]).format(t=noun, T=noun[0].upper() + noun[1:])

    def agent_text(self, language: str, topic: str, first_name: str) -> str:
        rng = self.rng
        subject = _pick(rng, TOPICS[topic]) if language == "en" else TOPIC_NOUNS[language][topic]
        return _pick(rng, AGENT_REPLIES[language]).format(
            name=first_name, t=subject, T=subject[0].upper() + subject[1:]
        )

    def attachment(
        self, spec: tuple[str, str, int, int], channel: str, message_id: str
    ) -> dict[str, Any]:
        name, content_type, low, high = spec
        return {
            "name": name,
            "url": f"https://{CDN[channel]}/{message_id.replace(':', '_')}/{name}",
            "size": self.rng.randint(low, high),
            "content_type": content_type,
        }

    def deliver(self, planned: list[_Planned]) -> tuple[list[dict[str, Any]], StreamTruth]:
        """Bounded reordering, duplicates and moderation events: the delivery order."""
        s, rng = self.s, self.rng
        random_, uniform = rng.random, rng.uniform
        window = float(s.reorder_window)
        duplicate_rate, removed_rate = s.duplicate_rate, s.removed_rate
        hide_below = s.removed_rate + s.hidden_rate
        # anchors are creation indices; sorting by sent_at moved them
        key_by_creation = [0.0] * len(planned)
        # (delivery key, tie-break, body, its message if it is a message's first delivery)
        delivery: list[tuple[float, int, dict[str, Any], PlannedMessage | None]] = []
        removed: set[str] = set()
        hidden: dict[str, bool] = {}  # message id -> hidden at the end

        def resend(key: float, body: dict[str, Any]) -> None:
            if random_() < duplicate_rate:
                late = random_() < 0.5
                again = key + (uniform(1, 500) if late else uniform(0.01, 3))
                delivery.append((again, len(delivery), _copy(body), None))

        def moderation(kind: str, message: PlannedMessage, after: float, delay: float) -> float:
            key = after + uniform(1, 300)
            occurred = _epoch(message.sent_at) + delay
            body = {
                "type": kind,
                "tenant_id": message.tenant_id,
                "message_id": message.message_id,
                "event_id": f"mod-{rng.getrandbits(64):016x}",
                "occurred_at": _iso_epoch(occurred),
            }
            delivery.append((key, len(delivery), body, None))
            resend(key, body)
            return key

        for position, (_, created, message, body, anchor) in enumerate(planned):
            key = position + random_() * window
            if message.kind != "customer":
                # never before the customer message that opened the session
                key = max(key, key_by_creation[anchor] + 1e-3)
            key_by_creation[created] = key
            delivery.append((key, len(delivery), body, message))
            resend(key, body)
            roll = random_()
            if roll < removed_rate:
                removed.add(message.message_id)
                moderation("message_removed", message, key, uniform(60, 7200))
            elif roll < hide_below and message.kind == "customer":
                delay = uniform(60, 3600)
                hid_key = moderation("message_hidden", message, key, delay)
                hidden[message.message_id] = True
                if random_() < s.unhide_share:
                    moderation("message_unhidden", message, hid_key, delay + uniform(60, 7200))
                    hidden[message.message_id] = False

        delivery.sort()  # keys then tie-breaks are unique: bodies are never compared
        out_of_order: set[str] = set()
        latest: dict[tuple[str, str], str] = {}
        for _, _, _, message in delivery:
            if message is None:
                continue
            thread = (message.origin, message.customer)
            if message.sent_at < latest.get(thread, ""):
                out_of_order.add(message.message_id)
            else:
                latest[thread] = message.sent_at
        moderation_events = len(removed) + len(hidden) + sum(not h for h in hidden.values())
        truth = StreamTruth(
            planned=tuple(item[2] for item in planned),
            deliveries=len(delivery),
            duplicates=len(delivery) - len(planned) - moderation_events,
            out_of_order=frozenset(out_of_order),
            removed=frozenset(removed),
            hidden=frozenset(m for m, still in hidden.items() if still),
            unhidden=frozenset(m for m, still in hidden.items() if not still),
        )
        return [item[2] for item in delivery], truth


def _copy(body: dict[str, Any]) -> dict[str, Any]:
    """A re-sent body: equal, but sharing no dict or list with the first one."""
    return {key: _copy_value(value) for key, value in body.items()}


def _copy_value(value: Any) -> Any:
    if isinstance(value, dict):
        return _copy(value)
    if isinstance(value, list):
        return [_copy_value(item) for item in value]
    return value
