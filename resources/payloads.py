"""JSON the platform can take: parsing with a depth limit, what PostgreSQL `jsonb` can store, and
the one size limit of a queue message.

Pure functions over bytes and decoded values, shared by the webhook service (bodies from
providers), the CLI (`supportflow queue send`) and both queue backends (checked at send time).

- Parsing refuses nesting deeper than `MAX_JSON_DEPTH` before the decoder runs, so a body of
  100,000 brackets costs one linear scan, not a recursion error. It accepts the `NaN` and
  `Infinity` literals Python's decoder knows, so that a *verified* body holding them can be
  refused for what it is (and kept for inspection) rather than as unreadable.
- `jsonb` cannot hold a NUL character (`\\u0000`), a lone UTF-16 surrogate, `NaN`/`Infinity`
  (nor numbers too large for a float, which decode as infinity), or integers beyond `numeric`'s
  131,072 digits. `unstorable` finds the first such value and names where it is.
- A queue message is at most `MAX_MESSAGE_BYTES` (256 KiB, the SQS limit) as the backends
  measure it: the compact JSON body plus its idempotency id (SQS counts message attributes).
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_JSON_DEPTH = 64
MAX_MESSAGE_BYTES = 256 * 1024
# numeric keeps up to 131072 digits before the decimal point
_MAX_INT_BITS = int(131_072 * math.log2(10))
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = tuple(1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256))
# the escaped forms json.dumps writes for NUL and for a surrogate code unit
_SUSPECT = re.compile(r"\\u0000|\\ud[89a-f]", re.IGNORECASE)


class PayloadError(ValueError):
    """JSON the platform cannot take; the message says why and where, never the value."""


class MessageTooLarge(PayloadError):
    """A queue message over MAX_MESSAGE_BYTES."""


def exceeds_depth(raw: bytes, limit: int) -> bool:
    """True when arrays and objects in JSON text nest deeper than `limit` (brackets inside
    strings do not count). Linear, at C speed: strings and everything but brackets are dropped
    first; a run of more than `limit` openers decides at once; otherwise the running depth."""
    text = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    if re.search(rb"[\[{]{%d}" % (limit + 1), text):
        return True
    depth = 0
    for start in range(0, len(text), 4096):  # chunks, so a deep prefix stops the scan early
        steps = list(
            accumulate(map(_DEPTH_STEP.__getitem__, text[start : start + 4096]), initial=depth)
        )
        if max(steps) > limit:
            return True
        depth = steps[-1]
    return False


def loads(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode JSON text, refusing nesting deeper than `max_depth` before decoding."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if exceeds_depth(data, max_depth):
        raise PayloadError(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(data.decode("utf-8"))  # RFC 8259: JSON on the wire is UTF-8
    except UnicodeDecodeError:
        raise PayloadError("not valid JSON: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise PayloadError(f"not valid JSON: {str(exc).split(';')[0][:120]}") from None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "holds a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (an unpaired \\ud800-\\udfff escape)"
    return None


def unstorable(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why PostgreSQL `jsonb` cannot store `value`, naming where (`event-data.recipient: holds
    a NUL character`), or None when it can. Values are never quoted."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        where = path or "the document"
        if depth > max_depth:
            return f"{where}: nested deeper than {max_depth} levels"
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return f"{where}: {problem}"
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{where}: NaN or Infinity (or a number too large), not a JSON number"
        elif isinstance(item, int):
            if item.bit_length() > _MAX_INT_BITS:
                return f"{where}: number out of range"
        elif isinstance(item, dict):
            for key, child in item.items():
                name = str(key)
                problem = _text_problem(name)
                if problem:
                    return f"{where}: a key {problem}"
                stack.append((child, f"{path}.{name}" if path else name, depth + 1))
        elif isinstance(item, list | tuple):
            for index, child in enumerate(item):
                stack.append((child, f"{path}[{index}]", depth + 1))
    return None


def message_size(text: str, dedup_id: str) -> int:
    """Bytes of a queue message as SQS counts them: body plus the `dedup_id` attribute."""
    return len(text.encode("utf-8")) + len(dedup_id.encode("utf-8")) + len("dedup_id") + 6


def encode_message(body: dict[str, Any], dedup_id: str) -> str:
    """The compact JSON a queue backend sends, or PayloadError when no backend can take it:
    content `jsonb` cannot store, or more than MAX_MESSAGE_BYTES."""
    try:
        text = json.dumps(body, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        text = ""
    except RecursionError:
        raise PayloadError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    # json.dumps escapes NUL and surrogates, so only bodies showing those escapes (emoji are
    # surrogate pairs too) need the exact, slower check that names the field
    if not text or _SUSPECT.search(text):
        problem = unstorable(body)
        if problem:
            raise PayloadError(problem)
        if not text:
            raise PayloadError("cannot be written as JSON")
    size = message_size(text, dedup_id)
    if size > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"is {size} bytes; a queue message takes at most {MAX_MESSAGE_BYTES}")
    return text
