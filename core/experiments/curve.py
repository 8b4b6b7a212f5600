"""Error against N on the user's own labelled set, from one stored draw.

K answers per item per model are drawn once, as an ordinary batch (N = K samples of every
model, the model's default sampling), so the dashboard can open every call. Every curve is then
estimated from that one draw by :mod:`core.analysis`: one curve per model (N samples of it),
one for the mixed panel of all the models drawn, and one per panel the user names.

One call of a mixed panel is a call to a model picked at random from it (the mean single-call
error over the panel's slots), not a call to whichever model happens to come first: the
handbook's check "majority of 5 halves the error of one call" then compares the vote with the
panel's typical member, never with its best or its worst.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np
from pydantic import BaseModel, Field

from core.analysis import (
    Curve,
    EarlyStopReport,
    HarmReport,
    Recommendation,
    compare_early_stop,
    harm_report,
    majority_error_curve,
    recommend,
)
from core.analysis.curves import ROUGHLY_HALF
from core.analysis.reliability import ModelReliability, ReliabilityFit, fit_reliability
from core.api import Tally, build_task
from core.cost import describe_cost, dollars, is_simulated
from core.datasets import list_sets, load_set
from core.errors import InputError, TallyError
from core.formats import AnswerFormat, parse_format
from core.inputs import read_items
from core.panel import MAX_N, ModelSpec, Panel
from core.policy import Policy
from core.result import CallStatus, RunResult
from core.spec import RunSpec
from core.store import BatchInfo, BatchItem, Store
from core.task import Task

DEFAULT_ITEMS = 200
"""Enough items for a bootstrap interval a few points wide, few enough to draw in seconds."""
DEFAULT_K = 7
DEFAULT_NS = (1, 3, 5, 7)
DEFAULT_MIN_GAIN = 0.1
ONE_CALL = "one call"
MIXED = "mixed panel"

PanelKind = Literal["same-model", "mixed", "custom"]
ResultSink = Callable[[RunResult], None]


# --------------------------------------------------------------------------- the labelled set


@dataclass(frozen=True)
class LabelledItems:
    """A set to draw on: its name, the task every call is asked, and the items with gold."""

    name: str
    task: Task
    items: list[BatchItem]


def load_labelled(
    source: str,
    *,
    text_column: str = "text",
    gold_column: str | None = None,
    id_column: str | None = None,
    labels: Sequence[str] | None = None,
    template: str = "{input}",
) -> LabelledItems:
    """A bundled set by name, or a CSV/JSONL file whose gold sits in ``gold_column``.

    A file's gold column defaults to ``label`` (the bundled sets' own name for it); the labels
    to vote on default to the distinct gold values. Items without gold are left out; a set
    with no gold at all is refused, since a curve measures error against it.
    """
    if source in list_sets():
        bundled = load_set(source)
        task = Task(
            name=source, template=bundled.template, format=parse_format(dict(bundled.format))
        )
        items = [
            BatchItem(index=i, item_id=item.id, text=item.text, gold=item.gold)
            for i, item in enumerate(bundled.items)
        ]
        return LabelledItems(source, task, items)
    path = Path(source)
    if not path.is_file():
        known = ", ".join(list_sets())
        raise InputError(
            f"unknown labelled set {source!r}: name a bundled set ({known}) or a CSV/JSONL file"
        )
    gold = gold_column or "label"
    # Read once without the gold column: a problem with the file itself is reported as such,
    # and only then is a missing gold column what the second read can complain about.
    read_items(path, text_column=text_column, id_column=id_column)
    try:
        rows = read_items(path, text_column=text_column, gold_column=gold, id_column=id_column)
    except InputError:
        raise InputError(
            f"curve needs gold labels: {path.name} has no column {gold!r} "
            "(name the gold column with --gold-column)"
        ) from None
    with_gold = [row for row in rows if row.gold and row.gold.strip()]
    if not with_gold:
        raise InputError(f"curve needs gold labels: no row of {path.name} has a {gold!r} value")
    chosen = list(labels) if labels else sorted({row.gold.strip() for row in with_gold if row.gold})
    if len(chosen) < 2:
        raise InputError(
            f"curve needs at least two labels: every gold value in {path.name} is {chosen[0]!r}"
        )
    task = build_task(labels=chosen, template=template, name=path.stem)
    return LabelledItems(path.name, task, with_gold)


def pick_items(items: Sequence[BatchItem], count: int | None, seed: int) -> list[BatchItem]:
    """``count`` items drawn at random (seeded), in their order in the set; all when ``None``."""
    if count is None or count >= len(items):
        return list(items)
    if count < 1:
        raise InputError(f"items must be at least 1, got {count}")
    rng = np.random.default_rng(seed)
    keep = sorted(int(i) for i in rng.choice(len(items), size=count, replace=False))
    return [items[i] for i in keep]


# --------------------------------------------------------------------------- the draw


@dataclass(frozen=True)
class DrawPlan:
    """What one draw asks: every item, K samples of every model, in one batch."""

    set_name: str
    task: Task
    items: list[BatchItem]
    models: list[str]
    k: int
    panel: Panel
    policy: Policy = field(default_factory=Policy)

    @property
    def calls(self) -> int:
        return len(self.items) * self.panel.n

    @property
    def spec(self) -> RunSpec:
        return RunSpec(task=self.task, panel=self.panel, policy=self.policy)


def check_ns(ns: Sequence[int]) -> list[int]:
    values = sorted(set(ns))
    if not values:
        raise InputError("give at least one N, e.g. 1,3,5,7")
    if values[0] < 1:
        raise InputError(f"N must be a positive whole number, got {values[0]}")
    return values


def parse_ints(text: str, what: str) -> list[int]:
    """``"1,3,5"`` -> ``[1, 3, 5]``; one line naming ``what`` for anything else."""
    values: list[int] = []
    for part in text.split(","):
        if not part.strip():
            continue
        try:
            values.append(int(part.strip()))
        except ValueError:
            raise InputError(
                f"{what} takes whole numbers separated by commas, got {text!r}"
            ) from None
    if not values:
        raise InputError(f"{what} takes whole numbers separated by commas, got {text!r}")
    return values


def plan_draw(
    labelled: LabelledItems,
    models: Sequence[str],
    k: int,
    ns: Sequence[int],
    *,
    items: int | None = DEFAULT_ITEMS,
    seed: int = 0,
) -> DrawPlan:
    """Check everything that can be refused before a call is paid for, and lay out the batch."""
    names = list(dict.fromkeys(ModelSpec.parse(m).name for m in models))
    if not names:
        raise InputError("choose at least one model, e.g. sim:sim-strong")
    wanted = check_ns(ns)
    if k < 1:
        raise InputError(f"K must be at least 1, got {k}")
    if k < wanted[-1]:
        raise InputError(f"K={k} samples per model is fewer than N={wanted[-1]} needs")
    if k * len(names) > MAX_N:
        raise InputError(
            f"K={k} samples of {len(names)} models is {k * len(names)} calls per item, more "
            f"than the {MAX_N} a run allows: lower K or draw fewer models at a time"
        )
    chosen = pick_items(labelled.items, items, seed)
    panel = Panel.build(names, k * len(names))
    return DrawPlan(labelled.name, labelled.task, chosen, names, k, panel)


async def draw(tally: Tally, plan: DrawPlan, *, on_result: ResultSink | None = None) -> str:
    """Run the draw as a batch through the engine; every call is stored. Returns the batch id."""
    return await tally.run_batch(
        plan.items,
        plan.spec,
        name=f"curve draw: {plan.set_name}, K={plan.k}",
        source="curve",
        columns={"text": "text", "gold": "gold", "id": "id"},
        on_result=on_result,
    )


# --------------------------------------------------------------------------- reading a draw


@dataclass
class Draws:
    """Stored answers in the shape :mod:`core.analysis` reads, with what they cost and took."""

    samples: dict[str, dict[str, list[str | None]]]
    gold: dict[str, str]
    run_ids: dict[str, str]
    models: list[str]
    cost_per_call: dict[str, float | None]
    latencies: dict[str, list[float]]
    cost_usd: float | None
    skipped: int
    cost_known_usd: float = 0.0  # the known part of a cost that is partly unknown
    cost_unknown_runs: int = 0

    def k(self) -> int:
        """The fewest answers any item has from any model."""
        return min(
            (len(a) for row in self.samples.values() for a in row.values()),
            default=0,
        )


def gold_of(fmt: AnswerFormat, gold: str, answers: Sequence[str] = ()) -> str:
    """Gold in the form an item's answers are counted in: read by the format, and, where a
    tolerance groups near answers, the counted answer it matches (:meth:`gold_matches`, the
    one comparison the batch summary and the pages use too)."""
    read = fmt.read_gold(gold)
    value = read.value if read.value is not None else gold.strip()
    matching = sorted({a for a in answers if fmt.gold_matches(a, value)})
    return value if not matching or value in matching else matching[0]


def read_draws(
    results: Sequence[RunResult],
    fmt: AnswerFormat | None = None,
    order: Sequence[str] = (),
) -> Draws:
    """Per item and model the stored answers in sample order (``None``: no valid vote).

    Models come in ``order`` (the panel's), then any others. Only finished runs with a gold
    label count; an item missing a model's answers is skipped
    and counted in ``skipped``. A model's cost per call is unknown when any of its calls that
    used tokens has no price, never a partial average.
    """
    samples: dict[str, dict[str, list[str | None]]] = {}
    gold: dict[str, str] = {}
    run_ids: dict[str, str] = {}
    spent: dict[str, list[float | None]] = defaultdict(list)
    latencies: dict[str, list[float]] = defaultdict(list)
    models: dict[str, None] = {}
    skipped = 0
    total: float | None = 0.0
    known_usd, unknown_runs = 0.0, 0
    for run in results:
        known_usd += run.cost_known_usd if run.cost_usd is None else run.cost_usd
        if run.cost_usd is None:
            total = None
            unknown_runs += 1
        elif total is not None:
            total += run.cost_usd
        if not run.gold:
            continue
        calls = sorted(
            (c for c in run.calls if c.phase == "panel" and c.status.final),
            key=lambda c: (c.model, c.sample),
        )
        if not calls:
            skipped += 1
            continue
        row: dict[str, list[str | None]] = defaultdict(list)
        for call in calls:
            models.setdefault(call.model)
            row[call.model].append(call.answer if call.status == CallStatus.OK else None)
            if call.tokens_in or call.tokens_out or call.cost_usd is not None:
                spent[call.model].append(call.cost_usd)
            if call.status == CallStatus.OK and call.latency_ms is not None:
                latencies[call.model].append(call.latency_ms)
        item = run.item_id or run.run_id
        if fmt is not None:  # near answers count as one, as they do in the run's own vote
            grouped = fmt.group([a for answers in row.values() for a in answers if a is not None])
            row = {m: [None if a is None else grouped[a] for a in row[m]] for m in row}
        samples[item] = dict(row)
        gold[item] = (
            gold_of(fmt, run.gold, [a for answers in row.values() for a in answers if a])
            if fmt is not None
            else run.gold
        )
        run_ids[item] = run.run_id
    names = [m for m in order if m in models] + [m for m in models if m not in order]
    complete = {item: row for item, row in samples.items() if all(row.get(m) for m in names)}
    skipped += len(samples) - len(complete)
    cost_per_call: dict[str, float | None] = {}
    for model in names:
        prices = spent.get(model, [])
        known = [p for p in prices if p is not None]
        cost_per_call[model] = (
            float(np.mean(known)) if prices and len(known) == len(prices) else None
        )
    return Draws(
        samples=complete,
        gold={i: gold[i] for i in complete},
        run_ids={i: run_ids[i] for i in complete},
        models=names,
        cost_per_call=cost_per_call,
        latencies={m: list(v) for m, v in latencies.items()},
        cost_usd=total,
        skipped=skipped,
        cost_known_usd=known_usd,
        cost_unknown_runs=unknown_runs,
    )


def read_batch_draws(store: Store, batch_id: str) -> Draws:
    """The draw stored as batch ``batch_id``."""
    info = store.get_batch(batch_id)
    models = [m.name for m in info.spec.panel.models]
    return read_draws(store.batch_results(batch_id), info.spec.task.format, models)


# --------------------------------------------------------------------------- the curves


class PanelCurve(BaseModel):
    """One panel's error against N, the N to run, the items it harms, and early stopping."""

    name: str
    kind: PanelKind
    panel: list[str]
    curve: Curve
    recommendation: Recommendation
    harm: HarmReport
    early_stop: EarlyStopReport
    one_call: str  # what N=1 means for this panel


class CurveReport(BaseModel):
    """Everything ``tally curve`` measures, as stored with ``Store.save_curve``."""

    curve_id: str | None = None
    set_name: str
    batch_id: str
    items: int
    skipped_items: int
    k: int
    ns: list[int]
    models: list[str]
    seed: int
    min_gain: float
    cost_usd: float | None
    cost_per_call: dict[str, float | None]
    panels: list[PanelCurve]
    headline: str
    # Dawid–Skene on the draw's answers (no gold): each model's confusion and estimated
    # accuracy; its weights drive the early-stop "dawid-skene" rule. Empty in curves stored
    # before it was measured.
    reliability: list[ModelReliability] = Field(default_factory=list)
    # the known part of a draw cost that is partly unknown (absent in older stored curves)
    cost_known_usd: float | None = None
    cost_unknown_runs: int = 0

    def cost_text(self, money: Callable[[float | None], str] = dollars) -> str:
        """The draw's cost as every cost reads (:func:`core.cost.describe_cost`)."""
        return describe_cost(
            self.cost_usd,
            self.cost_known_usd,
            self.cost_unknown_runs,
            money=money,
            simulated=is_simulated(self.models),
        )

    def panel(self, name: str | None = None) -> PanelCurve:
        """The named panel, or the headline one."""
        wanted = name or self.headline
        for entry in self.panels:
            if entry.name == wanted:
                return entry
        raise InputError(f"no panel {wanted!r} in this curve")


def panel_name(panel: Sequence[str]) -> str:
    return ",".join(panel)


def parse_panel(text: str) -> list[str]:
    """``"sim:a,sim:a,sim:b"`` -> its model names, one per slot of one round."""
    names = [ModelSpec.parse(part).name for part in text.split(",") if part.strip()]
    if not names:
        raise InputError(f"a panel names at least one model, got {text!r}")
    return names


def _pooled(
    draws: Draws, panel: Sequence[str]
) -> tuple[dict[str, dict[str, list[str | None]]], list[float]]:
    """Every answer of the panel's slots as one model's: its N=1 is a random slot's call."""
    pooled: dict[str, dict[str, list[str | None]]] = {}
    for item, row in draws.samples.items():
        answers: list[str | None] = []
        for model in panel:
            answers.extend(row[model])
        pooled[item] = {ONE_CALL: answers}
    latencies = [ms for model in panel for ms in draws.latencies.get(model, [])]
    return pooled, latencies


def _mean_cost(draws: Draws, panel: Sequence[str]) -> float | None:
    prices = [draws.cost_per_call.get(m) for m in panel]
    known = [p for p in prices if p is not None]
    return float(np.mean(known)) if len(known) == len(prices) else None


def panel_curve(
    draws: Draws,
    panel: Sequence[str],
    ns: Sequence[int],
    *,
    kind: PanelKind,
    name: str | None = None,
    seed: int = 0,
    min_gain: float = DEFAULT_MIN_GAIN,
    boot: int = 1000,
    resamples: int = 200,
    reliability: ReliabilityFit | None = None,
) -> PanelCurve:
    """Curve, recommendation, harm report and early-stop comparison of one panel (with the
    Dawid–Skene rule given a fit of the draw)."""
    models = list(panel)
    missing = [m for m in dict.fromkeys(models) if m not in draws.models]
    if missing:
        raise InputError(f"the panel names {missing[0]}, which the draw did not sample")
    wanted = check_ns(ns)
    latency = {m: draws.latencies.get(m) or [] for m in models}
    latency_ms: dict[str, float | Sequence[float]] | None = (
        dict(latency) if all(latency.values()) else None
    )
    options: dict[str, Any] = {"seed": seed, "boot": boot, "draws": resamples}
    mixed = len(set(models)) > 1
    if not mixed:
        curve = majority_error_curve(
            draws.samples,
            draws.gold,
            models,
            wanted,
            cost_per_call=draws.cost_per_call,
            latency_ms=latency_ms,
            **options,
        )
        one_call = f"one call of {models[0]}"
    else:
        curve = _mixed_curve(draws, models, wanted, latency_ms, options)
        one_call = "one call of a model picked at random from the panel"
    return PanelCurve(
        name=name or panel_name(models),
        kind=kind,
        panel=models,
        curve=curve,
        recommendation=recommend(curve, min_gain=min_gain),
        harm=harm_report(draws.samples, draws.gold, models),
        early_stop=compare_early_stop(
            draws.samples,
            draws.gold,
            models,
            wanted[-1],
            seed=seed,
            draws=max(20, resamples // 4),
            reliability=reliability,
        ),
        one_call=one_call,
    )


def _mixed_curve(
    draws: Draws,
    models: list[str],
    ns: list[int],
    latency_ms: Mapping[str, float | Sequence[float]] | None,
    options: Mapping[str, Any],
) -> Curve:
    """A mixed panel's curve with N=1 measured on the pooled answers of its slots."""
    pooled, pooled_latency = _pooled(draws, models)
    one = majority_error_curve(
        pooled,
        draws.gold,
        [ONE_CALL],
        [1],
        cost_per_call={ONE_CALL: _mean_cost(draws, models)},
        latency_ms={ONE_CALL: pooled_latency} if latency_ms is not None else None,
        **options,
    )
    rest = [n for n in ns if n > 1]
    if not rest:
        return one.model_copy(update={"panel": models, "k": {m: draws.k() for m in models}})
    curve = majority_error_curve(
        draws.samples,
        draws.gold,
        models,
        rest,
        cost_per_call=draws.cost_per_call,
        latency_ms=latency_ms,
        **options,
    )
    points = [*one.points, *curve.points] if 1 in ns else curve.points
    five = curve.point(5)
    halving_ci = None
    if 1 in ns and five is not None and one.points[0].ci_low > 0:
        # N=1 is measured apart from the vote here, so no paired resample exists: the widest
        # ratio the two errors' own intervals allow, which errs towards "cannot tell"
        single = one.points[0]
        halving_ci = (five.ci_low / single.ci_high, five.ci_high / single.ci_low)
    return curve.model_copy(update={"points": points, "halving_ci": halving_ci})


def analyse_draws(
    draws: Draws,
    *,
    set_name: str,
    batch_id: str,
    ns: Sequence[int],
    panels: Sequence[Sequence[str]] = (),
    seed: int = 0,
    min_gain: float = DEFAULT_MIN_GAIN,
    boot: int = 1000,
    resamples: int = 200,
) -> CurveReport:
    """Every panel's curve from one draw: each model alone, all of them mixed, then ``panels``."""
    if not draws.samples:
        raise InputError("curve needs gold labels: the draw has no item with gold and answers")
    if not any(a is not None for row in draws.samples.values() for v in row.values() for a in v):
        raise TallyError(
            "no call of the draw returned a valid answer: check the models and the endpoint "
            "(the calls are stored with their errors)"
        )
    wanted = check_ns(ns)
    k = draws.k()
    if k < wanted[-1]:
        raise InputError(f"K={k} samples per model is fewer than N={wanted[-1]} needs")
    fit = fit_draws(draws)
    options: dict[str, Any] = {
        "seed": seed,
        "min_gain": min_gain,
        "boot": boot,
        "resamples": resamples,
        "reliability": fit,
    }
    entries: list[PanelCurve] = [
        panel_curve(draws, [m], wanted, kind="same-model", **options) for m in draws.models
    ]
    if len(draws.models) > 1:
        entries.append(
            panel_curve(
                draws,
                draws.models,
                wanted,
                kind="mixed",
                name=MIXED,
                **options,
            )
        )
    seen = {e.name for e in entries}
    for custom in panels:
        name = panel_name(custom)
        if name in seen:
            continue
        seen.add(name)
        entries.append(panel_curve(draws, custom, wanted, kind="custom", **options))
    headline = next((e.name for e in entries if e.kind == "mixed"), entries[0].name)
    return CurveReport(
        set_name=set_name,
        batch_id=batch_id,
        items=len(draws.samples),
        skipped_items=draws.skipped,
        k=k,
        ns=wanted,
        models=draws.models,
        seed=seed,
        min_gain=min_gain,
        cost_usd=draws.cost_usd,
        cost_known_usd=draws.cost_known_usd,
        cost_unknown_runs=draws.cost_unknown_runs,
        cost_per_call=draws.cost_per_call,
        panels=entries,
        headline=headline,
        reliability=fit.models,
    )


def fit_draws(draws: Draws) -> ReliabilityFit:
    """Dawid–Skene on every answer of the draw, without its gold: every sample of a model on
    an item is one vote of that model."""
    votes: dict[str, dict[str, dict[str, int]]] = {}
    for item, row in draws.samples.items():
        votes[item] = {}
        for model, answers in row.items():
            counts: dict[str, int] = defaultdict(int)
            for answer in answers:
                if answer is not None:
                    counts[answer] += 1
            votes[item][model] = dict(counts)
    return fit_reliability(votes)


def save_report(store: Store, report: CurveReport, params: Mapping[str, Any]) -> CurveReport:
    """Store the report; returns it with its ``curve_id``."""
    curve_id = store.save_curve(report.set_name, dict(params), report.model_dump(mode="json"))
    return report.model_copy(update={"curve_id": curve_id})


def load_report(store: Store, curve_id: str) -> CurveReport:
    """A stored curve as a report."""
    saved = store.get_curve(curve_id)
    report = CurveReport.model_validate(saved.result)
    return report.model_copy(update={"curve_id": saved.id})


def why_not_curvable(store: Store, info: BatchInfo) -> str | None:
    """Why a stored batch cannot be curved, or None when it can: a curve needs a finished
    batch, a format votes are counted in, and gold to judge the votes by."""
    if info.status != "done":
        return f"it is {info.status}, not done"
    if not info.spec.task.format.votable:
        return "its answers are free text, which is never voted"
    if not store.batch_gold(info.batch_id):
        return "it has no gold labels to judge the votes by"
    return None


def curve_from_batch(
    store: Store,
    batch_id: str,
    *,
    ns: Sequence[int],
    panels: Sequence[Sequence[str]] = (),
    seed: int = 0,
    min_gain: float = DEFAULT_MIN_GAIN,
    set_name: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> CurveReport:
    """Analyse a stored draw (any finished batch with gold) and store the curve under
    ``set_name`` (default: the batch's name)."""
    info = store.get_batch(batch_id)
    draws = read_batch_draws(store, batch_id)
    report = analyse_draws(
        draws,
        set_name=set_name or info.name,
        batch_id=batch_id,
        ns=ns,
        panels=panels,
        seed=seed,
        min_gain=min_gain,
    )
    stored = {"batch_id": batch_id, "ns": list(report.ns), "seed": seed, **(params or {})}
    return save_report(store, report, stored)


async def run_curve(
    tally: Tally,
    plan: DrawPlan,
    ns: Sequence[int],
    *,
    panels: Sequence[Sequence[str]] = (),
    seed: int = 0,
    min_gain: float = DEFAULT_MIN_GAIN,
    on_result: ResultSink | None = None,
) -> CurveReport:
    """Draw, analyse, store: what ``tally curve`` does."""
    store = tally.store
    if store is None:
        raise InputError("curve needs the store: the draw is kept there")
    for custom in panels:
        missing = [m for m in custom if m not in plan.models]
        if missing:
            raise InputError(
                f"the panel {panel_name(custom)} names {missing[0]}, which is not drawn"
            )
    batch_id = await draw(tally, plan, on_result=on_result)
    params = {
        "models": plan.models,
        "k": plan.k,
        "items": len(plan.items),
        "panels": [list(p) for p in panels],
        "min_gain": min_gain,
    }
    return await anyio.to_thread.run_sync(
        lambda: curve_from_batch(
            store,
            batch_id,
            ns=ns,
            panels=panels,
            seed=seed,
            min_gain=min_gain,
            set_name=plan.set_name,
            params=params,
        )
    )


def halving_sentence(rec: Recommendation) -> str:
    """The handbook's check in one line, the number first so the reader judges "about half",
    then the verdict its interval allows on this many items."""
    if rec.halving_check is None:
        return "halving check: needs N=1 and N=5 on the curve"
    removed = 1.0 - rec.halving_check
    effect = (
        f"removes {removed:.0%} of the one-call error"
        if removed >= 0
        else f"adds {-removed:.0%} to the one-call error"
    )
    line = (
        f"halving check: error(5) / error(1) = {rec.halving_check:.2f}; majority of 5 {effect} "
        "(the handbook reports about half)"
    )
    if rec.halving_ci is not None:
        low, high = rec.halving_ci
        line += f"; interval {low:.2f} to {high:.2f}"
    return line


VERDICT_WORDS = {
    "holds": "HOLDS on your data: majority of five at least roughly halves the one-call error",
    "does not hold": "DOES NOT HOLD on your data: majority of five removes clearly less than "
    "half of the one-call error",
    "cannot tell": "CANNOT TELL with this many items: the interval spans both answers; draw "
    "more items to decide",
}


def halving_verdict_line(rec: Recommendation) -> str | None:
    """The handbook's claim judged on the user's data, with its interval, in words."""
    if rec.halving_verdict is None or rec.halving_ci is None or rec.halving_check is None:
        return None
    low, high = rec.halving_ci
    return (
        f"The handbook's check {VERDICT_WORDS[rec.halving_verdict]} (error(5) / error(1) = "
        f"{rec.halving_check:.2f}, interval {low:.2f} to {high:.2f}; roughly half means at "
        f"most {ROUGHLY_HALF:.1f})."
    )


def why_not_five(rec: Recommendation, curve: Curve) -> str | None:
    """Why the recommended N differs from the handbook's five, or None when it is five."""
    if rec.n == 5:
        return None
    if rec.n < 5:
        detail = rec.reason.partition(": ")[2] or rec.reason
        return (
            f"Why {rec.n} and not the handbook's five: on your data, {detail}; the extra calls "
            "would cost more than they remove."
        )
    correlated = (
        f" The models' errors are correlated (ρ = {curve.rho:.2f}), so each vote is worth "
        "less than an independent one and more are needed."
        if curve.rho is not None and curve.rho > 0.05
        else ""
    )
    return (
        f"Why {rec.n} and not the handbook's five: the error still falls past five on your "
        f"data ({rec.reason}).{correlated}"
    )
