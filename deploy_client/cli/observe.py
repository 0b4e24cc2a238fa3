"""`metrics [DEP]` (with CPU and memory sparklines over the samples it takes) and `alerts [ack|resolve ID]`."""

from __future__ import annotations

from typing import Any

import typer

from deploy_client.cli.app import app, handled, session
from deploy_client.cli.output import OUTPUT_OPTION, Output, chosen, emit, fields_table, rows, sparkline

alerts_app = typer.Typer(help="Alerts: list (active by default), acknowledge, resolve.")
app.add_typer(alerts_app, name="alerts")

SYSTEM_FIELDS = (
    "total_deployments", "active_deployments", "by_status", "total_agents", "deployed_agents", "replicas_running",
    "deploy_success_rate_24h", "avg_deploy_seconds", "p95_deploy_seconds", "restarts_24h", "active_alerts",
    "invocations_24h", "error_rate_24h",
)  # fmt: skip


def _mib(value: Any) -> str:
    return "-" if value is None else f"{value / 1048576:.1f} MiB"


@app.command()
@handled
def metrics(
    ctx: typer.Context,
    dep: str | None = typer.Argument(None, help="A deployment (id or agent name); none: the system's figures."),
    samples: int = typer.Option(1, "--samples", "-n", min=1, max=1000, help="Readings to take (a sparkline of them)."),
    interval: float = typer.Option(2.0, "--interval", min=0.0, help="Seconds between readings."),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """A deployment's CPU, memory, restarts and invocations (or the system's figures without DEP)."""
    s = session(ctx)
    client = s.client()
    if dep is None:
        emit(s, client.system_metrics(), output, lambda m: fields_table(m, SYSTEM_FIELDS))
        return
    deployment_id = client.find_deployment(dep)["id"]
    readings: list[dict[str, Any]] = []
    for position in range(samples):
        if position:
            s.runtime.sleep(interval)
        readings.append(client.metrics(deployment_id))
        if samples > 1 and chosen(output) == Output.table:
            s.message(f"sample {position + 1}/{samples}")
    latest = readings[-1]
    cpu = [float(r.get("cpu_percent") or 0.0) for r in readings]
    memory = [float(r.get("memory_bytes") or 0) for r in readings]

    def table(m: dict[str, Any]) -> Any:
        view = fields_table(m, ("deployment_id", "status", "replicas", "restarts", "uptime_seconds", "sampled_at"))
        view.add_row("cpu", f"{m.get('cpu_percent') or 0:.1f}%  {sparkline(cpu)}")
        view.add_row(
            "memory", f"{_mib(m.get('memory_bytes'))} of {_mib(m.get('memory_limit_bytes'))}  {sparkline(memory)}"
        )
        calls = m.get("invocations") or {}
        view.add_row(
            "invocations",
            f"{calls.get('count', 0)} ({calls.get('errors', 0)} errors), p50 "
            f"{calls.get('p50_ms')} ms, p95 {calls.get('p95_ms')} ms",
        )
        return view

    data = latest if samples == 1 else {**latest, "samples": {"cpu_percent": cpu, "memory_bytes": memory}}
    emit(s, data, output, table)


def _alert_rows(page: dict[str, Any]) -> Any:
    return rows(
        ("ID", "SEVERITY", "KIND", "STATUS", "COUNT", "MESSAGE", "LAST SEEN"),
        page["items"],
        lambda a: (a["id"], a["severity"], a["kind"], a["status"], a["count"], a["message"], a["last_seen_at"]),
    )


@alerts_app.callback(invoke_without_command=True)
@handled
def alerts(
    ctx: typer.Context,
    status: str | None = typer.Option("active", "--status", help="active (default), acknowledged, resolved, all."),
    severity: str | None = typer.Option(None, "--severity"),
    output: Output | None = OUTPUT_OPTION,
) -> None:
    """The alerts, most severe first."""
    if ctx.invoked_subcommand is not None:
        return
    s = session(ctx)
    page = s.client().list_alerts(status=None if status == "all" else status, severity=severity)
    emit(s, page, output, _alert_rows)


@alerts_app.command("ack")
@handled
def alerts_ack(ctx: typer.Context, alert_id: str = typer.Argument(...), output: Output | None = OUTPUT_OPTION) -> None:
    """Acknowledge an alert (it stays until its condition clears or it is resolved)."""
    s = session(ctx)
    alert = s.client().acknowledge_alert(alert_id)
    emit(s, alert, output, lambda a: fields_table(a, ("id", "kind", "severity", "status", "acknowledged_at")))


@alerts_app.command("resolve")
@handled
def alerts_resolve(
    ctx: typer.Context, alert_id: str = typer.Argument(...), output: Output | None = OUTPUT_OPTION
) -> None:
    """Resolve an alert."""
    s = session(ctx)
    alert = s.client().resolve_alert(alert_id)
    emit(s, alert, output, lambda a: fields_table(a, ("id", "kind", "severity", "status", "resolved_at")))
