"""Run every benchmark and print one table: each figure the issue sets a target for, measured now.

    bench/run_all [--quick]

- bench/api.py: throughput under gunicorn in the production configuration (our /health, GET by id and the
  list of 50 against a bare Flask hello world under the same gunicorn settings, interact against the agent
  called directly);
- bench/deploy.py: deploy → running against raw docker-py, for 1 and 20 replicas;
- bench/events.py: an events page at 1M events against the same page at 1k (SQLite);
- bench/reconcile.py: one steady reconcile pass over 200 running containers;
- bench/interact.py: a streamed call's first byte through the service against the agent called directly,
  and streaming throughput through the service against direct.
`--quick` shortens every run (fewer seconds, rounds, events) for a smoke check; the figures in
docs/performance.md come from a full run on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import api, deploy, events, interact, reconcile  # noqa: E402

Row = tuple[str, str, str, bool]


def _api_rows(seconds: int, rounds: int) -> list[Row]:
    results = api.run(seconds=seconds, connections=16, rounds=rounds)
    rows: list[Row] = []
    for name, value, target in api.ratios(results):
        rows.append((name, f"{value:.2f}", f">= {target}", value >= target))
    hello = results[api.HELLO]
    rows.append(("  (bare hello world req/s, p99 ms)", f"{hello['rps']:.0f}, {hello['p99_ms']:.1f}", "", True))
    for case in (api.HEALTH, api.BY_ID, api.PAGE, api.INTERACT):
        rows.append((f"  ({case} req/s)", f"{results[case]['rps']:.0f}", "", True))
    return rows


def _deploy_rows(rounds: int) -> list[Row]:
    figures = deploy.run(rounds=rounds)
    one = figures["service_one"] / figures["raw_one"]
    many = figures["service_many"] / figures["raw_many"]
    return [
        ("deploy -> running / raw docker-py", f"{one:.2f}", "<= 1.25", one <= 1.25),
        ("20 replicas / 20 sequential raw", f"{many:.2f}", "<= 0.6", many <= 0.6),
        (
            "  (1 replica s; 20 replicas s)",
            f"{figures['service_one']:.3f}; {figures['service_many']:.2f}",
            "",
            True,
        ),
    ]


def _events_rows(count: int) -> list[Row]:
    figures = events.run(events=count)
    ratio = figures["big"] / figures["small"]
    return [
        (f"events page at {count:,} / at 1k", f"{ratio:.2f}", "<= 2", ratio <= 2),
        ("  (ms at the big one; at 1k)", f"{figures['big']:.2f}; {figures['small']:.2f}", "", True),
    ]


def _interact_rows(calls: int, megabytes: int, rounds: int) -> list[Row]:
    figures = interact.run(calls=calls, megabytes=megabytes, rounds=rounds)
    rows: list[Row] = [(name, f"{value:.2f}", target, met) for name, value, target, met in interact.rows(figures)]
    rows.append(
        (
            "  (first byte ms: direct; service; JSON)",
            f"{figures['direct_ttfb_ms']:.1f}; {figures['service_ttfb_ms']:.1f}; {figures['json_ttfb_ms']:.1f}",
            "",
            True,
        )
    )
    return rows


def _reconcile_rows(passes: int) -> list[Row]:
    figures = reconcile.run(argparse.Namespace(deployments=20, replicas=10, passes=passes))
    plain = statistics.median(figures["passes_ms_False"])
    checked = statistics.median(figures["passes_ms_True"])
    return [
        ("reconcile pass, 200 containers (ms)", f"{plain:.1f}", "< 100", plain < 100),
        ("  same, with HTTP health checks (ms)", f"{checked:.1f}", "< 100", checked < 100),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke check, not figures to quote")
    args = parser.parse_args()
    started = time.monotonic()
    sections: list[tuple[str, Any]] = [
        ("API throughput (gunicorn, wrk)", lambda: _api_rows(3, 1) if args.quick else _api_rows(6, 3)),
        ("deploys (real engine)", lambda: _deploy_rows(2 if args.quick else 6)),
        ("events page (SQLite)", lambda: _events_rows(100_000 if args.quick else 1_000_000)),
        ("reconcile pass (real engine)", lambda: _reconcile_rows(5 if args.quick else 20)),
        (
            "streamed interact (gunicorn, real engine)",
            lambda: _interact_rows(50, 5, 2) if args.quick else _interact_rows(200, 20, 5),
        ),
    ]
    rows: list[tuple[str, list[Row]]] = []
    for title, measure in sections:
        print(f"running: {title} ...", file=sys.stderr, flush=True)
        rows.append((title, measure()))
    print()
    print(f"machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}")
    print(f"{'figure':<42}{'measured':>16}{'target':>10}")
    missed = 0
    for title, section in rows:
        print(f"-- {title}")
        for name, value, target, ok in section:
            verdict = "" if not target else ("ok" if ok else "MISSED")
            missed += 0 if ok else 1
            print(f"{name:<42}{value:>16}{target:>10} {verdict}")
    print(f"\n{missed} target(s) missed; {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
