"""``tally jobs``: list, show and cancel jobs, whichever executor runs them.

Listing reaps first: a job whose executor died is shown marked (or queued again to resume),
never as running forever.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

jobs_app = typer.Typer(
    help="Jobs: every vote, batch, curve draw, sweep and re-vote.", no_args_is_help=True
)

out = Console()
DbOpt = Annotated[str | None, typer.Option("--database-url", help="Default: $TALLY_DATABASE_URL.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _jobs(database_url: str | None) -> Any:
    from core.config import load_settings
    from core.jobs.store import JobStore
    from core.store import Store

    store = Store(database_url or load_settings().database_url)
    store.ensure_schema()
    return JobStore(store)


def job_json(job: Any) -> dict[str, Any]:
    """A job as ``--json`` prints it (the claim's token is the owner's own, not shown)."""
    owner = job.owner
    return {
        "id": job.id,
        "kind": job.kind.value,
        "status": job.status.value,
        "lane": job.lane.value,
        "priority": job.priority,
        "executor": job.executor.value,
        "submitted_by": job.submitted_by,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "done": job.done,
        "total": job.total,
        "note": job.note,
        "result_ref": job.result_ref,
        "result": job.result,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "attempts": job.attempts,
        "owner": None if owner is None else {"host": owner.host, "pid": owner.pid},
        "lease_until": job.lease_until,
        "spec": job.spec,
    }


def _when(at: float | None) -> str:
    return "" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


@jobs_app.command("list")
def list_jobs(
    status: Annotated[
        list[str],
        typer.Option(
            "--status", help="queued, running, done, failed, cancelled, interrupted; repeat."
        ),
    ] = [],  # noqa: B006
    kind: Annotated[
        list[str], typer.Option("--kind", help="vote, batch, curve, sweep, revote; repeat.")
    ] = [],  # noqa: B006
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Jobs, newest first."""
    from core.cli import emit_json, guarded

    def go() -> list[Any]:
        jobs = _jobs(database_url)
        jobs.reap()
        return list(jobs.list_jobs(statuses=status or None, kinds=kind or None, limit=limit))

    found = guarded(go)
    if as_json:
        emit_json([job_json(j) for j in found])
        return
    if not found:
        out.print("no jobs")
        return
    table = Table(box=None)
    for name in ("id", "kind", "status", "progress", "result"):
        table.add_column(name, no_wrap=True)
    for name in ("submitted", "by", "note / error"):
        table.add_column(name)
    for j in found:
        progress = f"{j.done}/{j.total}" if j.total else ""
        table.add_row(
            j.id,
            j.kind.value,
            j.status.value,
            progress,
            j.result_ref or "",
            _when(j.created_at),
            j.submitted_by or "",
            j.error or j.note or "",
        )
    out.print(table)


@jobs_app.command("show")
def show_job(job_id: str, database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """One job: its spec, status, progress, lease and result."""
    from core.cli import emit_json, guarded

    def go() -> Any:
        jobs = _jobs(database_url)
        jobs.reap()
        return jobs.get(job_id)

    job = guarded(go)
    if as_json:
        emit_json(job_json(job))
        return
    doc = job_json(job)
    for key in ("created_at", "started_at", "finished_at", "lease_until"):
        doc[key] = _when(doc[key])
    for key, value in doc.items():
        if value not in (None, "", [], {}):
            out.print(f"[bold]{key}[/bold]: {value}", markup=True, highlight=False)


@jobs_app.command("cancel")
def cancel_job(job_id: str, database_url: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Ask a job to stop: a queued one ends now, a running one at its executor's next heartbeat."""
    from core.cli import emit_json, guarded

    job = guarded(lambda: _jobs(database_url).request_cancel(job_id))
    if as_json:
        emit_json(job_json(job))
    elif job.status.final and not job.cancel_requested:
        out.print(f"job {job.id} had already ended: {job.status.value}")
    elif job.status.final:
        out.print(f"job {job.id} cancelled")
    else:
        out.print(f"job {job.id}: cancel requested; it stops at its executor's next heartbeat")
