"""Queue message formats: a body decoded into a declared msgspec `Struct`, with errors that name
the field and the reason, and the idempotency key a producer declares for its messages.

Pure (msgspec only): each domain's `rules.py` declares its formats and keys with these; the
queues (`resources/queues.py`) take the key from the producer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec

# A producer's idempotency key of one message body: a text unique to what the message means (its
# id, scoped by the tenant where the id is unique only per tenant), or None when the body has no
# usable id; the queue then falls back to the hash of the body's canonical JSON.
DedupKey = Callable[[Mapping[str, Any]], str | None]

S = TypeVar("S", bound=msgspec.Struct)

_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_ENUM = re.compile(r"^Invalid enum value (?P<value>.+)$", re.DOTALL)


def id_key(field: str, body: Mapping[str, Any]) -> str | None:
    """`<field>:<value>` for a body whose `field` holds an id unique across tenants, else None."""
    value = body.get(field)
    return None if value in (None, "") else f"{field}:{value}"


def tenant_id_key(field: str, body: Mapping[str, Any], kind: str | None = None) -> str | None:
    """`<kind>:<tenant_id>:<value>` for an id unique only within its tenant, else None."""
    tenant, value = body.get("tenant_id"), body.get(field)
    if tenant in (None, "") or value in (None, ""):
        return None
    return f"{kind or field}:{tenant}:{value}"


def decode(body: Any, struct: type[S], error: type[Exception], *, where: str = "") -> S:
    """`body` (a parsed JSON object) as `struct`, or `error("<field>: <reason>")`.

    msgspec's own errors are reworded ("Expected `int`, got `str` - at `$.ticket_id`" becomes
    "ticket_id: expected `int`, got `str`"); what a Struct's `__post_init__` raises already names
    its field and passes through. `where` prefixes field names (`item[3].text`).
    """
    if not isinstance(body, dict):
        raise error(f"{where or 'message'}: expected a JSON object, got {type(body).__name__}")
    try:
        return msgspec.convert(body, struct)
    except msgspec.ValidationError as exc:
        cause = exc.__cause__
        text = str(cause) if isinstance(cause, ValueError | TypeError) else describe(exc, struct)
        raise error(f"{where}.{text}" if where else text) from None


def describe(exc: msgspec.ValidationError, struct: type[msgspec.Struct]) -> str:
    """msgspec's validation error as `<field>: <reason>`."""
    reason, at, path = str(exc).rpartition(" - at `$")
    reason, path = (reason, path.rstrip("`").lstrip(".")) if at else (path, "")
    if missing := _MISSING.match(reason):
        return f"{_join(path, missing['field'])}: missing"
    if unknown := _UNKNOWN.match(reason):
        return f"{_join(path, unknown['field'])}: unknown field"
    if (enum := _ENUM.match(reason)) and (choices := _literal_values(struct, path)):
        return f"{path}: expected {_one_of(choices)}, got {enum['value']}"
    return f"{path or 'message'}: {reason[:1].lower()}{reason[1:]}"


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def _literal_values(struct: type[msgspec.Struct], field: str) -> tuple[Any, ...]:
    """The values a top-level field of `struct` declares with `Literal[...]`, in their order."""
    annotation = get_type_hints(struct).get(field)
    kinds = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return next((get_args(k) for k in kinds if get_origin(k) is Literal), ())


def _one_of(values: tuple[Any, ...]) -> str:
    names = [repr(v) for v in values]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
