"""The feedback source kinds, registered in one place.

To add a kind: write `assets/feedback/sources/<kind>.py` with a `SourceKind` subclass and a
module-level `KIND`, and add the module to `_MODULES` below. The CLI options, pulls and the
webhook all go through this registry.
"""

from __future__ import annotations

from assets.feedback.rules import SourceConfigError
from assets.feedback.sources import conversations, discourse, webhook, zendesk
from assets.feedback.sources.base import SourceKind

_MODULES = (discourse, zendesk, conversations, webhook)

SOURCE_KINDS: dict[str, SourceKind] = {module.KIND.name: module.KIND for module in _MODULES}


def source_kind(name: str) -> SourceKind:
    try:
        return SOURCE_KINDS[name]
    except KeyError:
        raise SourceConfigError(
            f"unknown source kind {name!r}: expected one of {', '.join(sorted(SOURCE_KINDS))}"
        ) from None


__all__ = ["SOURCE_KINDS", "SourceKind", "source_kind"]
