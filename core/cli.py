"""The ``tally`` command: the same engine as the dashboard, headless.

Exit codes: 0 ok, 1 the work failed, 2 bad usage or bad input (one line on stderr saying why).
``--json`` prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from core.confidence import describe as describe_confidence
from core.config import MAX_CONCURRENCY, load_settings
from core.errors import InputError, TallyError
from core.jobs.cli import jobs_app
from core.panel import ModelSpec
from core.result import CallResult, Event, RunResult
from core.spec import RunSpec

if TYPE_CHECKING:
    from core.policy import Policy
    from core.task import Task


class OneLineGroup(TyperGroup):
    """The ``tally`` group, with the parser's own usage errors (an unknown option, a value
    that is not a number) told in one line and exit 2, as every other bad input is."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        def invoke() -> Any:
            return super(OneLineGroup, self).main(
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )

        if not standalone_mode:
            return invoke()
        try:
            code = invoke()
        except click_errors.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            ctx: Any = getattr(exc, "ctx", None)
            where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            err.print(f"tally: {message}{where}", highlight=False, markup=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            err.print("tally: aborted", highlight=False, markup=False)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="tally",
    cls=OneLineGroup,
    help="Fan one input out to N models, normalise and count the answers, decide on purpose.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The store: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="tally.toml (default: $TALLY_CONFIG, else built-ins)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ModelOpt = Annotated[
    list[str], typer.Option("--model", "-m", help="provider:model; repeat for a mixed panel.")
]
LabelsOpt = Annotated[str | None, typer.Option("--labels", help="Comma-separated labels.")]
SynonymOpt = Annotated[
    list[str], typer.Option("--synonym", help="SYNONYM=LABEL, repeatable.", show_default=False)
]
ConservativeOpt = Annotated[
    str | None, typer.Option("--conservative", help="Labels, most conservative first.")
]
FormatOpt = Annotated[
    str | None, typer.Option("--format", help="label, yesno, number, json or text.")
]
TemplateOpt = Annotated[str, typer.Option("--template", help="Prompt template with {input}.")]
SchemaOpt = Annotated[
    str | None, typer.Option("--schema", help="json format: a JSON schema, or @FILE holding one.")
]
ToleranceOpt = Annotated[
    float | None, typer.Option("--tolerance", help="number format: answers this close agree.")
]
TaskFileOpt = Annotated[
    Path | None,
    typer.Option("--task", help="task.toml: name, template, system and a [format] table."),
]
NOpt = Annotated[int | None, typer.Option("-n", help="Votes: samples of one model, or panel size.")]
AggOpt = Annotated[
    str,
    typer.Option(
        "--aggregate",
        help="majority|strict|at-least:K|weighted|unanimous|fastest; revote --batch also "
        "dawid-skene|one-coin.",
    ),
]
TieOpt = Annotated[
    str | None,
    typer.Option(
        "--tie-break", help="Chain, e.g. escalate:openai:gpt-4.1,expand:2,conservative,human."
    ),
]
AcceptOpt = Annotated[
    list[str],
    typer.Option("--accept", help="fastest: regex:..., labels:a,b or schema:{...}; repeatable."),
]
EarlyOpt = Annotated[
    bool, typer.Option("--early-stop", help="Cancel calls that cannot change the winner.")
]
MinValidOpt = Annotated[
    int | None,
    typer.Option(
        "--min-valid",
        help="Quorum: fewest valid votes (default: half the panel for strict and unanimous, "
        "else 1).",
    ),
]
CountInvalidOpt = Annotated[
    bool, typer.Option("--count-invalid", help="Invalid replies count in the denominator.")
]
CountErrorsOpt = Annotated[
    bool, typer.Option("--count-errors", help="Failed calls count in the denominator.")
]
POLICY_OPTIONS = (
    "aggregate",
    "accept",
    "tie_break",
    "early_stop",
    "min_valid",
    "count_invalid",
    "count_errors",
)
"""The parameters of ``run``, ``batch`` and ``revote`` that together are the policy."""

ConcurrencyOpt = Annotated[
    int | None,
    typer.Option("--concurrency", help="Global ceiling.", min=1, max=MAX_CONCURRENCY),
]
PortOpt = Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)]
DbOpt = Annotated[str | None, typer.Option("--database-url", help="Default: $TALLY_DATABASE_URL.")]
NoStoreOpt = Annotated[bool, typer.Option("--no-store", help="Do not persist the run.")]
TemperatureOpt = Annotated[
    float | None, typer.Option("--temperature", help="Sampling temperature for every model.")
]
SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", help="Sample k of each model asks seed S+k: repeatable samples."),
]


def model_specs(models: list[str], temperature: float | None, seed: int | None) -> list[ModelSpec]:
    params: dict[str, Any] = {}
    if temperature is not None:
        if not 0 <= temperature <= 2:
            raise InputError(f"--temperature must be between 0 and 2, got {temperature:g}")
        params["temperature"] = temperature
    if seed is not None:
        params["seed"] = seed
    return [ModelSpec.parse(m, params=params) for m in models]


def options_given(ctx: typer.Context, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` the command line set (not left at their defaults)."""
    given = []
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            given.append(name)
    return given


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"tally: {message}", highlight=False, markup=False, soft_wrap=True)
    return typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn``; turn Tally's errors into one line and the right exit code."""
    try:
        return fn()
    except TallyError as exc:
        raise fail(
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code
        ) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def parse_synonyms(items: list[str]) -> dict[str, str]:
    out_map: dict[str, str] = {}
    for item in items:
        word, sep, label = item.partition("=")
        if not sep or not word.strip() or not label.strip():
            raise InputError(f"--synonym takes SYNONYM=LABEL, got {item!r}")
        out_map[word.strip()] = label.strip()
    return out_map


def split_list(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def read_text(text: str) -> str:
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise InputError("input text is empty")
    return text


def task_and_policy(
    *,
    labels: str | None,
    synonym: list[str],
    conservative: str | None,
    answer_format: str | None,
    template: str,
    aggregate: str,
    tie_break: str | None,
    early_stop: bool,
    accept: list[str],
    min_valid: int | None,
    count_invalid: bool,
    count_errors: bool,
    schema: str | None = None,
    tolerance: float | None = None,
    task_file: Path | None = None,
) -> tuple[Task, Policy]:
    """The task and the policy the options of ``run`` and ``batch`` describe: one reading of
    them, so a batch decides each row as ``run`` would decide it alone."""
    from core.api import build_policy, build_task

    if task_file is not None:
        given = [labels, synonym, conservative, answer_format, schema, tolerance]
        if any(given) or tolerance is not None or template != "{input}":
            raise InputError("--task describes the whole task: drop the other task options")
        task = read_task_file(task_file)
    else:
        task = build_task(
            labels=split_list(labels) or None,
            synonyms=parse_synonyms(synonym),
            conservative=split_list(conservative),
            answer_format=answer_format,
            template=template,
            schema=None if schema is None else read_schema(schema),
            tolerance=tolerance,
        )
    policy = build_policy(
        aggregate=aggregate,
        tie_break=tie_break,
        early_stop=early_stop,
        accept=accept,
        min_valid=min_valid,
        count_invalid=count_invalid,
        count_errors=count_errors,
    )
    return task, policy


def read_schema(text: str) -> dict[str, Any]:
    """``--schema``: JSON text, or ``@PATH`` of a file holding it."""
    where = "--schema"
    if text.startswith("@"):
        path = Path(text[1:])
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise InputError(f"--schema {where}: cannot be read ({reason})") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(schema, dict):
        raise InputError(f"{where}: a JSON schema is an object")
    return schema


def read_task_file(path: Path) -> Task:
    """``--task task.toml``: a whole task (name, template, system and a [format] table with
    kind, labels, synonyms, conservative_order, schema or tolerance) in one file."""
    import tomllib

    from core.task import Task

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise InputError(f"{path}: cannot be read ({reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {' '.join(str(exc).split())}") from None
    try:
        return Task.from_dict(data)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


# -- live view ------------------------------------------------------------------------------

STATUS_STYLE = {
    "pending": "dim",
    "running": "yellow",
    "ok": "green",
    "invalid": "magenta",
    "error": "red",
    "timeout": "red",
    "cancelled": "dim",
}


class LiveCalls:
    """The calls of one run as a table that updates as events arrive."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, int], CallResult] = {}
        self.notes: list[str] = []

    def on_event(self, event: Event) -> None:
        if event.call is not None:
            self.calls[(event.call.phase, event.call.slot)] = event.call.model_copy()
        if event.kind in ("tie_break", "concurrency") and event.message:
            self.notes.append(event.message)

    def render(self) -> Table:
        from core.cost import call_cost_text, is_simulated

        table = Table(title="calls", expand=False)
        table.add_column("slot", no_wrap=True)
        table.add_column("model", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("answer", max_width=40, overflow="ellipsis")
        sim = is_simulated(c.model for c in self.calls.values())
        for col in ("latency", "tokens", "cost (simulated)" if sim else "cost", "retries"):
            table.add_column(col, no_wrap=True)
        for (phase, slot), call in sorted(self.calls.items(), key=lambda kv: kv[0][1]):
            tag = "" if phase == "panel" else f" ({phase})"
            answer = call.answer if call.answer is not None else (call.error or "")
            table.add_row(
                f"{slot}{tag}",
                Text(call.model),
                Text(call.status.value, style=STATUS_STYLE.get(call.status.value, "")),
                Text(answer[:60]),
                f"{call.latency_ms:.0f} ms" if call.latency_ms is not None else "",
                f"{call.tokens_in or 0}/{call.tokens_out or 0}"
                + (f" ({call.tokens_cached} cached)" if call.tokens_cached else "")
                if call.tokens_in is not None
                else "",
                call_cost_text(call, money) if call.status.final else "",
                str(call.retries),
            )
        for note in self.notes[-3:]:
            table.add_row("", "", "", Text(note, style="cyan"), "", "", "", "")
        return table


def money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.6f}"


def print_decision(result: RunResult) -> None:
    from core.cost import run_cost_text

    d = result.decision
    votes = ", ".join(f"{k}: {v}" for k, v in result.votes.items()) or "no valid votes"
    out.print(Text(f"votes  {votes}"))
    style = {"decided": "bold green", "escalated": "bold green", "tie": "bold yellow"}.get(
        d.status.value, "bold red"
    )
    head = f"{d.status.value.upper()}"
    if d.label is not None:
        head += f"  {d.label}"
    out.print(Text(head, style=style))
    if d.branches:
        out.print(Text("tie-break: " + " -> ".join(d.branches)))
    if d.reason:
        out.print(Text(d.reason, style="dim"))
    if d.label is not None:
        out.print(Text(describe_confidence(d.confidence)))
    if d.quorum is not None:
        out.print(Text(d.quorum.describe()))
    if d.degraded is not None:
        out.print(Text(f"DEGRADED: {d.degraded.why}", style="bold yellow"))
    out.print(
        Text(
            f"cost {run_cost_text(result, money)}  latency {result.latency_ms:.0f} ms  "
            f"run {result.run_id}"
        )
    )


# -- commands -------------------------------------------------------------------------------


@app.command()
def run(
    text: Annotated[str, typer.Argument(help="The input; '-' reads it from stdin.")],
    model: ModelOpt = [],  # noqa: B006
    n: NOpt = None,
    labels: LabelsOpt = None,
    synonym: SynonymOpt = [],  # noqa: B006
    conservative: ConservativeOpt = None,
    answer_format: FormatOpt = None,
    template: TemplateOpt = "{input}",
    schema: SchemaOpt = None,
    tolerance: ToleranceOpt = None,
    task_file: TaskFileOpt = None,
    aggregate: AggOpt = "majority",
    accept: AcceptOpt = [],  # noqa: B006
    tie_break: TieOpt = None,
    early_stop: EarlyOpt = False,
    min_valid: MinValidOpt = None,
    count_invalid: CountInvalidOpt = False,
    count_errors: CountErrorsOpt = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    no_store: NoStoreOpt = False,
    temperature: TemperatureOpt = None,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Vote once: TEXT to every slot of the panel, then the decision."""
    from core.api import Tally

    def go() -> RunResult:
        body = read_text(text)
        if not model:
            raise InputError("choose at least one model: --model sim:sim-strong")
        task, policy = task_and_policy(
            labels=labels,
            synonym=synonym,
            conservative=conservative,
            answer_format=answer_format,
            template=template,
            schema=schema,
            tolerance=tolerance,
            task_file=task_file,
            aggregate=aggregate,
            tie_break=tie_break,
            early_stop=early_stop,
            accept=accept,
            min_valid=min_valid,
            count_invalid=count_invalid,
            count_errors=count_errors,
        )
        live = LiveCalls()

        async def main() -> RunResult:
            async with Tally.open(
                config=config, database_url=database_url, persist=not no_store
            ) as tally:
                panel = tally.panel(model_specs(model, temperature, seed), n)
                spec = RunSpec(task=task, panel=panel, policy=policy)
                if as_json or not out.is_terminal:
                    return await tally.vote_job(body, spec, source="cli", submitted_by=cli_user())
                with Live(live.render(), console=out, refresh_per_second=8) as view:

                    def on_event(event: Event) -> None:
                        live.on_event(event)
                        view.update(live.render())

                    return await tally.vote_job(
                        body, spec, source="cli", on_event=on_event, submitted_by=cli_user()
                    )

        return anyio.run(main)

    result = guarded(go)
    if as_json:
        emit_json(result.to_json())
    else:
        if not out.is_terminal:
            out.print(calls_table(result))
        print_decision(result)
    if result.decision.status.value == "failed":
        raise typer.Exit(1)


def calls_table(result: RunResult) -> Table:
    live = LiveCalls()
    for call in result.calls:
        live.calls[(call.phase, call.slot)] = call
    return live.render()


@app.command()
def batch(
    file: Annotated[Path | None, typer.Argument(help="CSV or JSONL; one run per row.")] = None,
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    gold_column: Annotated[str | None, typer.Option("--gold-column")] = None,
    id_column: Annotated[str | None, typer.Option("--id-column")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="BATCH_ID to finish.")] = None,
    model: ModelOpt = [],  # noqa: B006
    n: NOpt = None,
    labels: LabelsOpt = None,
    synonym: SynonymOpt = [],  # noqa: B006
    conservative: ConservativeOpt = None,
    answer_format: FormatOpt = None,
    template: TemplateOpt = "{input}",
    schema: SchemaOpt = None,
    tolerance: ToleranceOpt = None,
    task_file: TaskFileOpt = None,
    aggregate: AggOpt = "majority",
    accept: AcceptOpt = [],  # noqa: B006
    tie_break: TieOpt = None,
    early_stop: EarlyOpt = False,
    min_valid: MinValidOpt = None,
    count_invalid: CountInvalidOpt = False,
    count_errors: CountErrorsOpt = False,
    concurrency: ConcurrencyOpt = None,
    temperature: TemperatureOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
    queue: Annotated[
        bool,
        typer.Option("--queue", help="Queue it for `tally worker`s and print the job id."),
    ] = False,
    part_size: Annotated[
        int, typer.Option("--part-size", min=1, help="With --queue: items per queued part.")
    ] = 20,
) -> None:
    """Run every row of FILE through the panel (or finish an interrupted batch with --resume);
    with --queue, store it and leave it to the team's workers."""
    from core.analysis.reliability import METHODS
    from core.api import Tally
    from core.batch import batch_summary, load_resume
    from core.experiments.reliability import learned_summary
    from core.inputs import read_items

    learned = aggregate if aggregate in METHODS else None

    def go() -> dict[str, Any]:
        async def main() -> dict[str, Any]:
            async with Tally.open(
                config=config, database_url=database_url, concurrency=concurrency
            ) as tally:
                assert tally.store is not None
                if resume:
                    if file is not None:
                        raise InputError("give either FILE or --resume BATCH_ID, not both")
                    items, spec = await anyio.to_thread.run_sync(load_resume, tally.store, resume)
                    batch_id: str | None = resume
                else:
                    if file is None:
                        raise InputError("give a CSV or JSONL FILE, or --resume BATCH_ID")
                    if not model:
                        raise InputError("choose at least one model: --model sim:sim-strong")
                    items = read_items(
                        file, text_column=text_column, gold_column=gold_column, id_column=id_column
                    )
                    task, policy = task_and_policy(
                        labels=labels,
                        synonym=synonym,
                        conservative=conservative,
                        answer_format=answer_format,
                        template=template,
                        schema=schema,
                        tolerance=tolerance,
                        task_file=task_file,
                        aggregate="majority" if learned else aggregate,
                        tie_break=tie_break,
                        early_stop=early_stop,
                        accept=accept,
                        min_valid=min_valid,
                        count_invalid=count_invalid,
                        count_errors=count_errors,
                    )
                    panel = tally.panel(model_specs(model, temperature, seed), n)
                    spec = RunSpec(task=task, panel=panel, policy=policy)
                    batch_id = None
                # before the progress bar shows
                tally.check_batch(items, spec, new=batch_id is None)
                if queue:
                    from core.jobs.queue import queue_batch

                    job = await anyio.to_thread.run_sync(
                        lambda: queue_batch(
                            tally.store,  # type: ignore[arg-type]
                            list(items),
                            spec,
                            name=file.name if file else "resume",
                            columns={"text": text_column, "gold": gold_column, "id": id_column},
                            concurrency=tally.engine.concurrency,
                            batch_id=batch_id,
                            part_items=part_size,
                            submitted_by=cli_user(),
                        )
                    )
                    return {"job_id": job.id, "batch_id": job.result_ref, "queued": True}
                started = time.monotonic()
                progress = BatchProgress(len(items), quiet=as_json)
                with progress:
                    batch_id = await batch_job(
                        tally,
                        items,
                        spec,
                        name=file.name if file else "resume",
                        columns={"text": text_column, "gold": gold_column, "id": id_column},
                        on_result=progress.advance,
                        batch_id=batch_id,
                    )
                summary = await anyio.to_thread.run_sync(batch_summary, tally.store, batch_id)
                if learned:  # the first pass was majority: fit it, then decide again
                    relearned = await tally.revote_learned(batch_id, method=learned)
                    summary["learned"] = await anyio.to_thread.run_sync(
                        learned_summary, tally.store, batch_id, relearned
                    )
                summary["elapsed_s"] = round(time.monotonic() - started, 3)
                summary["calls_made"] = progress.calls
                summary["calls_per_s"] = round(progress.calls / max(summary["elapsed_s"], 1e-9), 2)
                return summary

        return anyio.run(main)

    summary = guarded(go)
    if summary.get("queued"):
        del summary["queued"]
        if as_json:
            emit_json(summary)
        else:
            out.print(summary["job_id"], highlight=False)
        return
    if as_json:
        emit_json(summary)
    else:
        print_summary(summary)
    if summary.get("failed", 0) and summary.get("failed") == summary.get("total"):
        raise typer.Exit(1)


def cli_user() -> str:
    """Who a command's work is recorded as: the local user (sign-in is the dashboard's)."""
    from core.auth import local_identity

    return local_identity().to_json()


async def batch_job(
    tally: Any,
    items: list[Any],
    spec: RunSpec,
    *,
    name: str,
    columns: dict[str, str | None],
    on_result: Callable[[RunResult], None],
    batch_id: str | None,
) -> str:
    """A batch (new, or ``batch_id`` resumed) as a job of this process: the batch row and its
    inputs are stored first, then the job runs what is not finished."""
    from core.jobs import JobKind
    from core.jobs.specs import BatchSpec
    from core.jobs.work import Hooks, run_here

    store = tally.store
    if batch_id is None:
        batch_id = await anyio.to_thread.run_sync(
            lambda: store.create_batch(
                name=name,
                source="cli",
                spec=spec,
                columns=columns,
                concurrency=tally.engine.concurrency,
                items=[(i.index, i.item_id, i.text, i.gold) for i in items],
                submitted_by=cli_user(),
            )
        )
    finished = await run_here(
        tally,
        JobKind.BATCH,
        BatchSpec(batch_id=batch_id).model_dump(),
        hooks=Hooks(on_result=on_result),
        total=len(items),
        result_ref=batch_id,
        submitted_by=cli_user(),
    )
    if finished.job.status == "cancelled":
        raise TallyError(f"batch {batch_id} was cancelled: resume it with --resume {batch_id}")
    return str(batch_id)


class BatchProgress:
    """A rich progress bar with rate and ETA, silent under --json. It shows from the first
    finished run on, so a batch refused before its first call prints its one line alone."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
            disable=quiet,
        )
        self.task = self.progress.add_task("batch", total=total, rate="")
        self.started = time.monotonic()
        self.wall_start = time.time()
        self.done = 0
        self.calls = 0  # calls made by this invocation (not reused from an earlier attempt)

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.done:
            self.progress.stop()

    def advance(self, result: RunResult) -> None:
        if not self.done:
            self.progress.start()
        self.done += 1
        self.calls += sum(
            1 for c in result.calls if c.started_at is not None and c.started_at >= self.wall_start
        )
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        self.progress.update(self.task, advance=1, rate=f"{rate:.1f} runs/s")


def print_summary(summary: dict[str, Any]) -> None:
    from core.cost import batch_cost_text

    table = Table(title=f"batch {summary.get('batch_id')}", show_header=False)
    for key, value in summary.items():
        if key in ("cost_known_usd", "unknown_cost_runs", "simulated_cost"):
            continue  # read in the cost line
        if key == "cost_usd":
            value = batch_cost_text(summary, money)
        if key == "effective_voters":
            value = value["sentence"]
        if key == "learned":  # a second pass by the fitted posterior: what it changed
            value = (
                f"{value['method']}: {value['changed']} decisions changed, accuracy "
                f"{fmt_rate(value['accuracy'])}, mean confidence "
                + ("-" if value["mean_confidence"] is None else f"{value['mean_confidence']:.2f}")
            )
        table.add_row(key, str(value))
    out.print(table)


@app.command()
def revote(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="A stored run.")] = None,
    batch_id: Annotated[str | None, typer.Option("--batch", help="Every run of a batch.")] = None,
    aggregate: AggOpt = "majority",
    accept: AcceptOpt = [],  # noqa: B006
    tie_break: TieOpt = None,
    early_stop: EarlyOpt = False,
    min_valid: MinValidOpt = None,
    count_invalid: CountInvalidOpt = False,
    count_errors: CountErrorsOpt = False,
    expand: Annotated[
        bool,
        typer.Option("--expand", help="Call the slots whose calls were cancelled (early stop)."),
    ] = False,
    clamp_gold: Annotated[
        bool,
        typer.Option(
            "--clamp-gold",
            help="dawid-skene/one-coin: the batch's gold as known labels (a set labelled in part).",
        ),
    ] = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Decide stored runs again from their stored answers: under each run's own policy, or,
    given any policy flag, under the policy those flags describe (as ``run`` reads them).

    ``--aggregate dawid-skene`` (or ``one-coin``) with ``--batch`` learns each model's
    reliability from the batch's answers and decides every run by the fitted posterior (its
    winner's posterior is the confidence); no new calls. The new runs' specs keep the learned
    weights."""
    from core.analysis.reliability import METHODS
    from core.api import Tally, build_policy

    learned = aggregate if aggregate in METHODS else None
    if learned is not None:
        return revote_learned(
            ctx,
            batch_id=batch_id,
            run_id=run_id,
            method=learned,
            policy_flags={
                "accept": accept,
                "tie_break": tie_break,
                "early_stop": early_stop,
                "min_valid": min_valid,
                "count_invalid": count_invalid,
                "count_errors": count_errors,
            },
            clamp_gold=clamp_gold,
            config=config,
            database_url=database_url,
            as_json=as_json,
        )
    if clamp_gold:
        raise fail("--clamp-gold goes with --aggregate dawid-skene or one-coin")

    def go() -> list[tuple[str, RunResult]]:
        if (run_id is None) == (batch_id is None):
            raise InputError("give a RUN_ID or --batch BATCH_ID")
        given = any(options_given(ctx, POLICY_OPTIONS))
        policy = (
            build_policy(
                aggregate=aggregate,
                tie_break=tie_break,
                early_stop=early_stop,
                accept=accept,
                min_valid=min_valid,
                count_invalid=count_invalid,
                count_errors=count_errors,
            )
            if given
            else None
        )

        async def main() -> list[tuple[str, RunResult]]:
            async with Tally.open(config=config, database_url=database_url) as tally:
                assert tally.store is not None
                store = tally.store
                if batch_id is not None:
                    await anyio.to_thread.run_sync(store.get_batch, batch_id)
                    ids = [
                        r.run_id for r in await anyio.to_thread.run_sync(store.batch_runs, batch_id)
                    ]
                else:
                    ids = [run_id or ""]
                if policy is not None and tally.calls_needed(policy) and not as_json:
                    err.print("note: escalate/expand branches call models when a tie remains")
                results = await tally.revote(ids, policy, expand=expand)
                return list(zip(ids, results, strict=True))

        return anyio.run(main)

    pairs = guarded(go)
    results = [result for _, result in pairs]
    for old_id, result in pairs:
        if result.missing:
            slots = ", ".join(f"slot {m.slot} {m.model}" for m in result.missing)
            err.print(
                f"note: run {old_id}: {len(result.missing)} votes this policy needs are missing "
                f"({slots}: cancelled); add --expand to call just those",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    if as_json:
        emit_json([r.to_json() for r in results] if batch_id else results[0].to_json())
        return
    for result in results:
        print_decision(result)


def revote_learned(
    ctx: typer.Context,
    *,
    batch_id: str | None,
    run_id: str | None,
    method: str,
    policy_flags: dict[str, Any],
    clamp_gold: bool,
    config: Path | None,
    database_url: str | None,
    as_json: bool,
) -> None:
    """``revote --batch B --aggregate dawid-skene``: fit, then decide by the posterior."""
    from core.api import Tally, build_policy
    from core.experiments.reliability import LearnedRevote

    def go() -> LearnedRevote:
        if batch_id is None or run_id is not None:
            raise InputError(f"--aggregate {method} learns from a whole batch: give --batch ID")
        others = [n for n in options_given(ctx, POLICY_OPTIONS) if n != "aggregate"]
        policy = build_policy(aggregate="weighted", **policy_flags) if others else None

        async def main() -> LearnedRevote:
            async with Tally.open(config=config, database_url=database_url) as tally:
                return await tally.revote_learned(
                    batch_id, policy, method=method, clamp_gold=clamp_gold
                )

        return anyio.run(main)

    learned = guarded(go)
    if as_json:
        emit_json(learned.to_json())
        return
    print_reliability(learned.reliability)
    for result in learned.runs:
        print_decision(result)


def print_reliability(report: Any) -> None:
    """Per model its estimated accuracy, weight and confusion; the effective voters."""
    table = Table(title=f"{report.method} on batch {report.batch_id} ({report.items} items)")
    for col in ("model", "votes", "accuracy", "weight", "confusion (true -> voted)"):
        table.add_column(col, justify="left" if col.startswith(("model", "conf")) else "right")
    for m in report.models:
        confusion = "; ".join(
            f"{truth}: " + ", ".join(f"{v} {p:.2f}" for v, p in row.items() if p >= 0.005)
            for truth, row in m.confusion.items()
        )
        table.add_row(
            m.model,
            str(m.votes),
            fmt_rate(m.accuracy),
            f"{report.weights[m.model]:.2f}",
            confusion,
        )
    out.print(table)
    out.print(Text(report.sentence()))
    for score in report.scores:
        out.print(
            Text(
                f"{score.aggregate:<12} {fmt_rate(score.accuracy)} on gold "
                f"({fmt_rate(score.ci_low)} - {fmt_rate(score.ci_high)})"
            )
        )


# -- experiments ----------------------------------------------------------------------------


def fmt_rate(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}%}"


def fmt_ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f} ms"


@app.command()
def curve(
    set_name: Annotated[
        str, typer.Option("--set", help="regression, tickets, or a CSV/JSONL file with gold.")
    ] = "regression",
    text_column: Annotated[str, typer.Option("--text-column", help="A file's input column.")] = (
        "text"
    ),
    gold_column: Annotated[
        str | None, typer.Option("--gold-column", help="A file's gold column (default: label).")
    ] = None,
    id_column: Annotated[str | None, typer.Option("--id-column")] = None,
    labels: LabelsOpt = None,
    template: TemplateOpt = "{input}",
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="provider:model to sample K times; repeat. Default: the sim panel.",
        ),
    ] = [],  # noqa: B006
    panel: Annotated[
        list[str],
        typer.Option("--panel", help='A panel to curve too, e.g. "sim:a,sim:a,sim:b"; repeat.'),
    ] = [],  # noqa: B006
    k: Annotated[int, typer.Option("-k", "--k", help="Answers drawn per item per model.")] = 7,
    ns: Annotated[str, typer.Option("--n", help="The N to estimate, e.g. 1,3,5,7.")] = "1,3,5,7",
    items: Annotated[
        int | None, typer.Option("--items", help="Items drawn at random from the set.")
    ] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the item pick and resampling.")] = 0,
    min_gain: Annotated[
        float, typer.Option("--min-gain", help="Recommend the N where two more votes gain less.")
    ] = 0.1,
    concurrency: ConcurrencyOpt = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Error against N: draw K answers per item per model once, then estimate every N."""
    from core.api import Tally
    from core.experiments import (
        CurveReport,
        load_labelled,
        parse_ints,
        parse_panel,
        plan_draw,
        run_curve,
    )
    from core.sim.models import DEFAULT_PANEL

    def go() -> CurveReport:
        wanted = parse_ints(ns, "--n")
        panels = [parse_panel(p) for p in panel]
        models = list(model) + [m for p in panels for m in p]
        if not models:
            models = [f"sim:{name}" for name in DEFAULT_PANEL]
        labelled = load_labelled(
            set_name,
            text_column=text_column,
            gold_column=gold_column,
            id_column=id_column,
            labels=split_list(labels) or None,
            template=template,
        )
        plan = plan_draw(labelled, models, k, wanted, items=items, seed=seed)

        async def main() -> CurveReport:
            async with Tally.open(
                config=config, database_url=database_url, concurrency=concurrency
            ) as tally:
                for name in plan.models:
                    tally.panel([name])
                progress = BatchProgress(len(plan.items), quiet=as_json)
                with progress:
                    return await run_curve(
                        tally,
                        plan,
                        wanted,
                        panels=panels,
                        seed=seed,
                        min_gain=min_gain,
                        on_result=progress.advance,
                    )

        return anyio.run(main)

    report = guarded(go)
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        print_curve(report)


def print_curve(report: Any) -> None:
    from core.experiments import halving_sentence

    head = report.panel()
    table = Table(title=f"error against N: {head.name} ({report.items} items, K={report.k})")
    for col in ("N", "error", "95% interval", "independent", "cost/item", "latency"):
        table.add_column(col, justify="right")
    for p in head.curve.points:
        table.add_row(
            str(p.n),
            fmt_rate(p.error),
            f"{fmt_rate(p.ci_low)} - {fmt_rate(p.ci_high)}",
            fmt_rate(p.independent_error),
            money(p.cost_per_item),
            fmt_ms(p.latency_ms),
        )
    out.print(table)
    rec = head.recommendation
    rho = head.curve.rho
    out.print(
        Text(
            f"N=1 is {head.one_call}; error correlation between slots: "
            + ("-" if rho is None else f"{rho:.2f}")
        )
    )
    reason = rec.reason.removeprefix(f"N={rec.n}: ")
    out.print(Text(f"recommended N={rec.n}: {reason}", style="bold"))
    out.print(Text(halving_sentence(rec)))
    if head.harm.message:
        out.print(Text(f"warning: {head.harm.message}", style="yellow"))
    out.print(Text("every panel:", style="bold"))
    for entry in report.panels:
        first, last = entry.curve.points[0], entry.curve.points[-1]
        check = entry.recommendation.halving_check
        parts = [f"error {fmt_rate(first.error)} at N={first.n}"]
        if last.n != first.n:
            parts.append(f"{fmt_rate(last.error)} at N={last.n}")
        parts.append(f"recommended N={entry.recommendation.n}")
        if check is not None:
            parts.append(f"error(5)/error(1) {check:.2f}")
        out.print(Text(f"  {entry.name} ({entry.kind}): " + ", ".join(parts)), soft_wrap=True)
    early = Table(title=f"early stop, up to N={head.early_stop.max_n}")
    for col in ("rule", "calls/item", "accuracy", "saving", "as accurate"):
        early.add_column(col)
    for rule in head.early_stop.rules:
        early.add_row(
            Text(f"{rule.rule}: {rule.description}"),
            f"{rule.calls_per_item:.2f}",
            fmt_rate(rule.accuracy),
            fmt_rate(rule.saving, 0),
            "yes" if rule.equal_or_better else f"no ({rule.accuracy_delta:+.1%})",
        )
    out.print(early)
    if report.reliability:
        out.print(
            Text(
                "Dawid–Skene on the draw (no gold), estimated accuracy: "
                + ", ".join(f"{m.model} {fmt_rate(m.accuracy)}" for m in report.reliability)
            ),
            soft_wrap=True,
        )
    out.print(
        Text(
            f"draw cost {report.cost_text(money)}; curve {report.curve_id}, "
            f"draw batch {report.batch_id}"
        )
    )


@app.command()
def sweep(
    model: Annotated[str, typer.Option("--model", "-m", help="provider:model to load.")],
    levels: Annotated[
        str, typer.Option("--levels", help="Concurrency levels, e.g. 1,2,4,8,16,32,64.")
    ] = "1,2,4,8,16,32,64",
    calls_per_level: Annotated[
        int,
        typer.Option(
            "--calls-per-level", help="Calls per level (at least four rounds of the level)."
        ),
    ] = 16,
    save_ceiling: Annotated[
        bool,
        typer.Option("--save-ceiling", help="Write the ceiling as max_concurrency in tally.toml."),
    ] = False,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The throughput wall: calls/s and latency against concurrency; finds the ceiling.

    Exits 1 when the endpoint does not answer the first call (nothing was measured), 2 for
    bad input (levels, an unknown provider, --save-ceiling without a tally.toml).
    """
    from core.analysis import SweepPoint
    from core.experiments import SweepReport, parse_ints
    from core.experiments.sweep import sweep_and_store

    def go() -> SweepReport:
        wanted = parse_ints(levels, "--levels")

        def on_level(point: SweepPoint) -> None:
            if not as_json:
                err.print(
                    f"concurrency {point.concurrency}: {point.throughput:.2f} calls/s, "
                    f"p50 {fmt_ms(point.p50_ms)}, {point.errors} errors",
                    highlight=False,
                    markup=False,
                )

        async def main() -> SweepReport:
            return await sweep_and_store(
                model,
                wanted,
                calls_per_level=calls_per_level,
                config=config,
                database_url=database_url,
                save=save_ceiling,
                on_level=on_level,
            )

        return anyio.run(main)

    report = guarded(go)
    if as_json:
        emit_json(report.model_dump(mode="json"))
        return
    verdict = report.verdict
    table = Table(title=f"sweep of {report.model}")
    # cpu: the client's event loop per call; loop: how busy it was (near 100%: the client's wall)
    for col in ("concurrency", "calls", "errors", "calls/s", "p50", "p95", "cpu", "loop"):
        table.add_column(col, justify="right")
    for p in verdict.points:
        load = p.client_load
        table.add_row(
            str(p.concurrency),
            str(p.calls),
            str(p.errors),
            f"{p.throughput:.2f}",
            fmt_ms(p.p50_ms),
            fmt_ms(p.p95_ms),
            fmt_ms(p.cpu_ms_per_call, 2),
            "-" if load is None else f"{load:.0%}",
        )
    out.print(table)
    out.print(Text(f"{verdict.shape}: {verdict.message}", style="bold"))
    if verdict.warning:
        source = "client" if verdict.client_bound else "handbook"
        out.print(Text(f"{source}: {verdict.warning}", style="yellow"))
    ceiling = "none yet" if verdict.ceiling is None else str(verdict.ceiling)
    out.print(
        Text(f"ceiling: {ceiling} (peak {verdict.peak_throughput:.2f} calls/s at {verdict.peak})")
    )
    if report.saved is not None:
        out.print(
            Text(
                f"saved max_concurrency = {report.saved.max_concurrency} for "
                f"[providers.{report.saved.provider}] in {report.saved.path}"
            )
        )
    elif save_ceiling:
        out.print(Text("no ceiling found, so nothing was saved: sweep higher levels"))
    cost = report.cost_text(money)
    out.print(Text(f"sweep {report.sweep_id}: {report.calls} calls, cost {cost}"))


@app.command("sim-server")
def sim_server(
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    port: PortOpt = 8001,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same answers.")] = 0,
    time_scale: Annotated[
        float, typer.Option(help="Multiply every simulated delay.", min=0.0)
    ] = 1.0,
    capacity: Annotated[
        int | None, typer.Option(help="At most K requests in service; the rest queue.", min=1)
    ] = None,
    contention: Annotated[
        int | None, typer.Option(help="Service slows once more than K are in flight.", min=1)
    ] = None,
    fault: Annotated[
        list[str], typer.Option(help="[MODEL:]KIND:RATE, e.g. 429:0.1 or sim-flaky:cut:0.2.")
    ] = [],  # noqa: B006
    independent: Annotated[
        bool, typer.Option(help="Independent errors (no shared item difficulty).")
    ] = False,
    rpm: Annotated[
        float | None, typer.Option(help="Rate limit: requests per minute (429 above it).")
    ] = None,
    tpm: Annotated[
        float | None, typer.Option(help="Rate limit: tokens per minute (429 above it).")
    ] = None,
) -> None:
    """Serve the simulated panel as an OpenAI-compatible endpoint."""
    from core.sim.faults import FaultPlan
    from core.sim.ratelimits import RateLimits
    from core.sim.server import run_server

    def go() -> None:
        plan = FaultPlan.parse(fault) if fault else None
        limits = RateLimits(rpm, tpm) if rpm is not None or tpm is not None else None
        run_server(
            host=host,
            port=port,
            seed=seed,
            time_scale=time_scale,
            capacity=capacity,
            contention=contention,
            faults=plan,
            independent=independent,
            on_listen=lambda url: err.print(f"sim server on {url}"),
            rate_limits=limits,
        )

    guarded(go)


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Parts of batches run at once.")
    ] = 2,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Run the team's queued batches (PostgreSQL store), with the ceilings and the pace every
    worker shares, until SIGINT or SIGTERM (in-flight parts finish first)."""
    import os
    import signal

    from core.api import Tally
    from core.jobs.queue import queue_dsn, work
    from core.store import Store

    def go() -> None:
        queue_dsn(Store(database_url or load_settings().database_url))  # PostgreSQL, or say so

        async def main() -> None:
            async with Tally.open(
                config=config, database_url=database_url, shared_limits=True
            ) as tally:
                stop = anyio.Event()

                async def on_signal() -> None:
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            err.print("worker: stopping once its parts are done")
                            stop.set()
                            return

                async with anyio.create_task_group() as tg:
                    tg.start_soon(on_signal)
                    await work(
                        tally,
                        concurrency=concurrency,
                        stop=stop,
                        on_ready=lambda: err.print(f"worker ready (pid {os.getpid()})"),
                        on_part=lambda p: err.print(
                            f"part {p.start}-{p.stop} of batch {p.batch_id}", highlight=False
                        ),
                    )
                    tg.cancel_scope.cancel()

        anyio.run(main)

    guarded(go)


@db_app.command("upgrade")
def db_upgrade(database_url: DbOpt = None) -> None:
    """Apply the store's migrations up to the newest."""
    from core.store import Store

    def go() -> str:
        store = Store(database_url or load_settings().database_url)
        store.upgrade()
        return store.safe_url

    url = guarded(go)
    out.print(f"store at {url} is up to date")


@app.command()
def export(
    what: Annotated[str, typer.Argument(help="runs, calls or reviews (the audit trail)")],
    path: Annotated[Path, typer.Argument(help="Output file: .csv, .jsonl or .parquet")],
    batch_id: Annotated[str | None, typer.Option("--batch")] = None,
    database_url: DbOpt = None,
) -> None:
    """Export stored runs, calls or reviews (CSV cells are escaped against formula injection)."""
    from core.store import RunFilter, Store
    from core.store.export import export_calls, export_reviews, export_runs

    def go() -> None:
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in ("csv", "jsonl", "parquet"):
            raise InputError(f"export to .csv, .jsonl or .parquet, not {path.name!r}")
        if what not in ("runs", "calls", "reviews"):
            raise InputError(f"export runs, calls or reviews, not {what!r}")
        if what == "reviews" and batch_id is not None:
            raise InputError("--batch filters runs and calls; reviews export the whole trail")
        store = Store(database_url or load_settings().database_url)
        store.ensure_schema()
        if what == "reviews":
            export_reviews(store, path, fmt)
            return
        f = RunFilter(batch_id=batch_id)
        (export_runs if what == "runs" else export_calls)(store, path, fmt, f)  # type: ignore[arg-type]

    guarded(go)
    out.print(f"wrote {path}")


@app.command()
def dashboard(
    port: Annotated[int, typer.Option(help="Dashboard port.", min=1, max=65535)] = 8501,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    sim_port: Annotated[
        int, typer.Option(help="Port of the sim server started with it.", min=1, max=65535)
    ] = 8001,
) -> None:
    """Start the dashboard, and the sim server on loopback when no provider key is set."""
    from core.launch import launch_dashboard

    guarded(lambda: launch_dashboard(host=host, port=port, sim_port=sim_port))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
