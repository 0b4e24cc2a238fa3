"""Server-sent events read as they come: `event:`/`data:` fields up to a blank line, comments skipped."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One server-sent event: its `event` name (None for the default `message`) and its JSON `data`."""

    event: str | None
    data: Any


def parse(lines: Iterable[str]) -> Iterator[Event]:
    """The events of an event stream's lines (without their line ends), each as soon as its blank line came."""
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield Event(name, _decode("\n".join(data)))
            name, data = None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    if data:
        yield Event(name, _decode("\n".join(data)))


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
