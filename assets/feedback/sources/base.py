"""What every feedback source kind provides (`SourceKind`) and what it is given.

The uniform format the kinds produce (`FeedbackItem`, `SourceRef`, ...) is in
`assets/feedback/rules.py`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from assets.feedback.rules import (
    PulledBatch,
    SourceConfigError,
    SourceRef,
)


@dataclass(frozen=True)
class ConfigContext:
    """What `build_config` may use besides the options: the box that encrypts secrets at rest
    and the environment the operator named variables in (read at the CLI boundary)."""

    box: Any = None  # resources.secrets.SecretBox
    environ: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceOption:
    """A `supportflow sources add` option a source kind takes (`--<name>`)."""

    name: str
    help: str
    multiple: bool = False
    required: bool = False


class SourceKind:
    """What a source kind provides. Subclass it in one module and add it to the registry.

    A pulled kind implements `pull`; a pushed kind (webhook) sets `pulled = False`.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    pulled: ClassVar[bool] = True
    options: ClassVar[tuple[SourceOption, ...]] = ()

    def build_config(
        self, options: Mapping[str, Any], context: ConfigContext | None = None
    ) -> dict[str, Any]:
        """Validate `sources add` options into the stored config (raise SourceConfigError).
        Secrets go into the config only encrypted with `context.box`."""
        for option in self.options:
            if option.required and not options.get(option.name):
                raise SourceConfigError(f"--{option.name} is required for kind {self.name}")
        return {
            option.name.replace("-", "_"): options[option.name]
            for option in self.options
            if options.get(option.name) not in (None, (), [])
        }

    def check(self, conn: Any, config: Mapping[str, Any]) -> None:
        """Check the config against the warehouse when the source is added (optional)."""

    def after_create(self, conn: Any, source: SourceRef) -> dict[str, str]:
        """Work to do once the source row exists (same transaction); returns values to show
        the operator once, e.g. a webhook token."""
        return {}

    def pull(self, source: SourceRef, context: PullContext) -> Iterator[PulledBatch]:
        """Yield batches of new items; each batch's cursor is committed with its items."""
        raise NotImplementedError(f"source kind {self.name} is not pulled")


@dataclass
class PullContext:
    """What a pull may use: the warehouse connection factory and a clients factory."""

    connection: Any  # a callable returning a connection context manager (one transaction)
    discourse_client: Any = None
    secret_box: Any = None  # decrypts secrets stored in source configs
    log: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
