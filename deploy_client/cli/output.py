"""How a result is shown: `-o table` for people (rich), `-o json` and `-o yaml` for scripts.

Without `-o`: a table on a terminal, JSON when stdout is piped. Only the result goes to stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table
from rich.text import Text

from deploy_client.cli.app import Session
from deploy_client.specs import dump_yaml

BARS = "▁▂▃▄▅▆▇█"


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OUTPUT_OPTION: Any = typer.Option(None, "-o", "--output", help="table, json or yaml (default: table on a terminal).")


def chosen(output: Output | None) -> Output:
    if output is not None:
        return output
    return Output.table if sys.stdout.isatty() else Output.json


def emit(s: Session, data: Any, output: Output | None, table: Callable[[Any], Table | str] | None = None) -> None:
    """Print `data` on stdout as chosen; `table(data)` makes the table (or a text) for people."""
    kind = chosen(output)
    if kind == Output.json:
        _plain(json.dumps(data, indent=2))
    elif kind == Output.yaml:
        _plain(dump_yaml(data).rstrip("\n"))
    elif table is not None:
        rendered = table(data)
        if isinstance(rendered, str):
            _plain(rendered)
        else:
            s.out.print(rendered)
    else:
        _plain(dump_yaml(data).rstrip("\n"))


def _plain(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def rows(
    columns: Sequence[str],
    items: Sequence[dict[str, Any]],
    cells: Callable[[dict[str, Any]], Sequence[Any]],
    *,
    title: str | None = None,
) -> Table:
    """A table with `columns`, one row per item."""
    table = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(*(_cell(v) for v in cells(item)))
    return table


def fields_table(data: dict[str, Any], keys: Sequence[str]) -> Table:
    """A two-column table of `data`'s `keys`."""
    table = Table(show_header=False, show_edge=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in keys:
        if key in data:
            table.add_row(key, _cell(data[key]))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def sparkline(values: Sequence[float]) -> str:
    """Bars for `values`, scaled between their minimum and maximum."""
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return BARS[0] * len(values)
    return "".join(BARS[round((v - low) / (high - low) * (len(BARS) - 1))] for v in values)


def replicas(deployment: dict[str, Any]) -> str:
    counts = deployment.get("replicas") or {}
    return f"{counts.get('ready', 0)}/{counts.get('desired', 0)}"


class ProgressLine:
    """A `--wait`'s progress on stderr: on a terminal one line (with a spinner) rewritten in place, the last one
    left standing at the end; elsewhere (a CI log, a pipe) each change on a line of its own."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._status: Status | None = None
        self._last: str | None = None

    def show(self, text: str) -> None:
        if text == self._last:
            return
        self._last = text
        if not self._console.is_terminal:
            self._console.print(text, highlight=False, markup=False)
        elif self._status is None:
            self._status = self._console.status(Text(text))
            self._status.start()
        else:
            self._status.update(Text(text))

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
            if self._last is not None:
                self._console.print(self._last, highlight=False, markup=False)
