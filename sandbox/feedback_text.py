"""Deterministic, realistic customer-feedback text for the sandbox, tests and benchmarks.

Feedback is written about product themes (billing, login, exports ...) with a sentiment. Much of
the negative feedback is said the way customers say it ("charged twice", "still not fixed")
rather than with words a general-purpose lexicon knows, which is why a classifier trained on a
tenant's own rated tickets can beat the lexicon. A few items are in German, Spanish or French.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TOPICS: dict[str, list[str]] = {
    "billing": [
        "the invoice for this month",
        "my credit card was charged twice",
        "the subscription renewal charge",
        "the refund for the annual plan",
        "the billing page and the invoice total",
    ],
    "login": [
        "the password reset email",
        "the two-factor login code",
        "single sign-on login with Okta",
        "being locked out of my account after the password change",
        "the login page and the password reset link",
    ],
    "export": [
        "the CSV export of the ticket report",
        "exporting the monthly report to a spreadsheet",
        "the scheduled report export",
        "the export download of the CSV file",
        "the report export with custom columns",
    ],
    "mobile": [
        "the iOS app on my iPhone",
        "the Android app after the update",
        "push notifications in the mobile app",
        "the mobile app on startup",
        "the iPhone app notifications",
    ],
    "integrations": [
        "the Slack integration",
        "the Salesforce sync",
        "the API rate limit on the webhook integration",
        "the Jira integration sync",
        "webhook delivery to our Slack channel",
    ],
    "performance": [
        "the dashboard loading speed",
        "search on the dashboard being slow",
        "the agent dashboard taking thirty seconds to load",
        "slow page loads on the ticket dashboard",
        "the dashboard timing out at peak hours",
    ],
}

# Only used when asked for: a theme that appears suddenly (tests plant it as a new topic).
NEW_TOPICS: dict[str, list[str]] = {
    "dark_mode": [
        "the new dark mode theme contrast",
        "dark mode theme colours in the editor",
        "the dark mode toggle and theme contrast",
    ],
}

POSITIVE = [
    "Thanks, {t} works great now and the team was really helpful.",
    "I love how easy {t} is, excellent work!",
    "Support resolved {t} within minutes, very happy.",
    "{T} is fixed and everything is back to normal, thank you.",
    "Quick answer about {t}, problem solved on the first reply.",
    "Great job on {t}, it saves us hours every week.",
    "{T} finally behaves as documented, appreciated.",
    "Smooth experience with {t}, nothing to complain about.",
]
NEGATIVE = [
    "This is terrible, {t} is broken again and nobody answers.",
    "{T} is still not fixed after three weeks of waiting.",
    "We were charged twice because of {t}, please refund us.",
    "I have asked about {t} four times and still no reply.",
    "{T} stopped working after the update, our team cannot do its job.",
    "Thinking about cancelling our subscription because of {t}.",
    "{T} keeps failing and the workaround from support does not help.",
    "Third ticket about {t} this month, still waiting on an engineer.",
    "{T} lost our data again, this cannot go on.",
    "Very disappointed with {t}, it is unusable.",
]
NEUTRAL = [
    "Question about {t}: where can I change the settings?",
    "How do I configure {t} for a second workspace?",
    "Is there documentation for {t}?",
    "We are evaluating {t} for the sales team next quarter.",
    "Can someone explain how {t} handles time zones?",
]
FOREIGN = {
    "de": [
        "Der Export funktioniert seit dem Update nicht mehr, bitte helfen Sie uns schnell.",
        "Vielen Dank, das Problem mit der Rechnung wurde sehr schnell gelöst.",
        "Die App stürzt beim Start ab und wir warten seit einer Woche auf eine Antwort.",
    ],
    "es": [
        "La exportación del informe no funciona desde la actualización, necesitamos ayuda.",
        "Muchas gracias, el equipo de soporte resolvió el problema con la factura.",
        "La aplicación se cierra al iniciar y nadie responde a nuestros mensajes.",
    ],
    "fr": [
        "L'export du rapport ne fonctionne plus depuis la mise à jour, merci de nous aider.",
        "Merci beaucoup, le support a résolu le problème de facturation très vite.",
        "L'application plante au démarrage et personne ne répond à nos messages.",
    ],
}
FIRST_NAMES = ["ana", "bob", "chen", "dara", "eli", "femi", "gita", "hugo", "ines", "jon", "kai"]
LAST_NAMES = ["smith", "ng", "okafor", "garcia", "muller", "rossi", "kim", "dubois", "silva"]


@dataclass(frozen=True)
class FeedbackText:
    text: str
    topic: str
    sentiment: str  # positive | neutral | negative (what the writer meant)
    language: str


def compose(rng: random.Random, topic: str, sentiment: str) -> str:
    """One piece of feedback about `topic` meaning `sentiment`."""
    phrases = TOPICS.get(topic) or NEW_TOPICS[topic]
    subject = rng.choice(phrases)
    template = rng.choice(
        {"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}[sentiment]
    )
    text = template.format(t=subject, T=subject[0].upper() + subject[1:])
    if rng.random() < 0.35:  # a second sentence about a related detail of the same theme
        text += " Also " + rng.choice(phrases) + "."
    return text


def feedback_text(
    rng: random.Random,
    *,
    negative_share: float = 0.3,
    neutral_share: float = 0.2,
    topics: list[str] | None = None,
    foreign_share: float = 0.05,
) -> FeedbackText:
    """A random piece of feedback with a known topic, sentiment and language."""
    if rng.random() < foreign_share:
        language = rng.choice(sorted(FOREIGN))
        return FeedbackText(rng.choice(FOREIGN[language]), "other", "neutral", language)
    topic = rng.choice(topics or sorted(TOPICS))
    roll = rng.random()
    sentiment = (
        "negative"
        if roll < negative_share
        else "neutral"
        if roll < negative_share + neutral_share
        else "positive"
    )
    return FeedbackText(compose(rng, topic, sentiment), topic, sentiment, "en")


def username(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)}_{rng.choice(LAST_NAMES)}{rng.randint(1, 99)}"


def rated_tickets(count: int, seed: int = 7, label_noise: float = 0.08) -> list[tuple[str, str]]:
    """(text, 'good'|'bad') pairs like helpdesk tickets with satisfaction ratings.

    Neutral questions are rated good (the customer got an answer); `label_noise` of the ratings
    disagree with the text, as real ratings do.
    """
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        item = feedback_text(rng, negative_share=0.4, neutral_share=0.15, foreign_share=0.0)
        label = "bad" if item.sentiment == "negative" else "good"
        if rng.random() < label_noise:
            label = "good" if label == "bad" else "bad"
        pairs.append((item.text, label))
    return pairs
