"""JSON from outside the service (request bodies, an agent's answer to `interact`), parsed without a way to a 500.

`json.loads` alone lets through what the rest of the service cannot handle: nesting so deep that the
parser (or any later recursive walk: marshmallow, the encoder, the NUL check) raises `RecursionError`,
an integer with more digits than Python converts (`ValueError`), and `NaN`, `Infinity` or `1e999`,
which are not JSON, which the response encoder writes back as invalid JSON and which PostgreSQL's JSONB
refuses. `loads` turns each of them into an `InvalidJson` whose message says why; its nesting limit is
`MAX_JSON_DEPTH`. A leaf module: it imports nothing of the service.
"""

from __future__ import annotations

import json
import math
from typing import Any

SYNTAX_MESSAGE = "Invalid JSON body."


class InvalidJson(ValueError):
    """The text is not JSON the service takes; the message says why, as a sentence."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson(f"The number {text[:20]} is out of range.")
    return value


def _constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not a JSON value.")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels deep (iteratively: no recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, level = pending.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if level > limit:
            return True
        pending.extend((child, level + 1) for child in children)
    return False


def loads(raw: bytes | str, *, max_depth: int) -> Any:
    """Parse `raw` as JSON nested at most `max_depth` arrays/objects deep, with finite numbers only.

    Raises:
        InvalidJson: not JSON (or not UTF-8), nested too deeply, an integer too long to convert, or a
            number that is not finite.
    """
    too_deep = InvalidJson(f"Arrays and objects nest more than {max_depth} levels deep.")
    try:
        value = json.loads(raw, parse_float=_finite, parse_constant=_constant)
    except InvalidJson:
        raise
    except RecursionError as exc:
        raise too_deep from exc
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
            raise InvalidJson(SYNTAX_MESSAGE) from exc
        raise InvalidJson("An integer has more digits than the service takes.") from exc
    if _deeper_than(value, max_depth):
        raise too_deep
    return value
