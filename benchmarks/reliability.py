"""Learned reliability against majority, on the same stored answers, and how long a fit takes.

Part 1, accuracy. Each labelled set is run once as a batch through the default simulated panel
(in process, no latency) into a fresh SQLite store; each sim scenario (``core.sim.scenarios``)
is written to the store as a batch of the same shape. Every batch is then read back with the
store's answers query and decided four ways on those same stored votes: plain majority,
majority weighted by each model's Dawid–Skene accuracy (log-odds), one-coin Dawid–Skene and
Dawid–Skene. Scores are on gold with 95% Wilson intervals; every way uses the same calls. The
fits see no gold; the "with reviews" row clamps gold on a random 10% of the items, as reviewers'
resolutions would be, and scores the other 90%.

Under each batch: how well the confidence is calibrated on gold, the votes' Beta posterior that
every decision stores against the Dawid–Skene posterior.

Part 2, early stop: on each of those batches, the stopping rules of
``core.analysis.earlystop`` replayed on the stored answers in random orders (fixed N, decided,
Beta, window, and the Dawid–Skene rule weighing each vote by a no-gold fit of the same
answers), with calls per item, accuracy, and the saving each makes against fixed N at equal or
better accuracy.

Part 3, speed: 100,000 stored answers (20,000 items x 5 models of the uneven scenario) read by
the store query and fitted by each model; and what importing crowd-kit costs a process, next
to importing pandas in the same process. Run: ``.venv/bin/python benchmarks/reliability.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TALLY_SIM_TIME_SCALE", "0")

from core.analysis.calibration import expected_calibration_error  # noqa: E402
from core.analysis.curves import Samples  # noqa: E402
from core.analysis.earlystop import EarlyStopReport, compare_early_stop  # noqa: E402
from core.analysis.reliability import (  # noqa: E402
    AggregateScore,
    calibration_points,
    compare_aggregates,
    fit_reliability,
)
from core.experiments.curve import gold_of, load_labelled  # noqa: E402
from core.experiments.disagreement import confidence_points  # noqa: E402
from core.experiments.reliability import store_scenario  # noqa: E402
from core.policy import Policy  # noqa: E402
from core.sim.models import DEFAULT_PANEL  # noqa: E402
from core.sim.scenarios import SCENARIOS  # noqa: E402
from core.spec import RunSpec  # noqa: E402
from core.store import Store  # noqa: E402


def run_bundled(url: str, name: str) -> str:
    """A batch of the bundled set through the default sim panel; returns its id."""
    from core.api import Tally

    labelled = load_labelled(name)

    async def main() -> str:
        async with Tally.open(database_url=url, concurrency=64) as tally:
            panel = tally.panel([f"sim:{m}" for m in DEFAULT_PANEL])
            spec = RunSpec(task=labelled.task, panel=panel, policy=Policy())
            return await tally.run_batch(labelled.items, spec, name=name)

    return anyio.run(main)


def scores_of(store: Store, bid: str, normalise: bool) -> dict[str, list[AggregateScore]]:
    """The four ways on a stored batch: without gold, and with 10% of gold as reviews."""
    answers = store.batch_answers(bid)
    gold = dict(answers.gold)
    if normalise:
        fmt = store.get_batch(bid).spec.task.format
        gold = {run_id: gold_of(fmt, label) for run_id, label in gold.items()}
    items = sorted(gold)
    random.Random(0).shuffle(items)
    cut = len(items) // 10
    reviews = {i: gold[i] for i in items[:cut]}
    rest = {i: gold[i] for i in items[cut:]}
    return {
        "no gold": compare_aggregates(answers.votes, gold, calls=answers.calls),
        "with reviews": compare_aggregates(answers.votes, rest, known=reviews, calls=answers.calls),
    }


def calibration_of(store: Store, bid: str, normalise: bool) -> str:
    """Expected calibration error on gold of each run's stored confidence (the votes' Beta
    posterior) and of the Dawid–Skene posterior of a no-gold fit, with their mean."""
    answers = store.batch_answers(bid)
    fmt = store.get_batch(bid).spec.task.format
    gold = dict(answers.gold)
    if normalise:
        gold = {run_id: gold_of(fmt, label) for run_id, label in gold.items()}
    beta = confidence_points(store.batch_results(bid), gold, fmt)
    fitted = calibration_points(fit_reliability(answers.votes), gold)
    parts = [
        f"{name} mean {sum(c for c, _ in points) / len(points):.3f}, "
        f"right {sum(r for _, r in points) / len(points):.1%}, "
        f"calibration error {expected_calibration_error(points):.1%}"
        for name, points in (("Beta", beta), ("Dawid–Skene", fitted))
        if points
    ]
    return "  confidence on gold: " + "; ".join(parts)


def print_scores(title: str, rows: Mapping[str, list[AggregateScore]]) -> None:
    print(f"\n{title}")
    print(f"  {'fit':<13}{'aggregate':<13}{'accuracy':>9}  {'95% interval':<16}{'calls/item':>10}")
    for fit, scores in rows.items():
        base = scores[0].accuracy
        for s in scores:
            gain = "" if s.aggregate == "majority" else f"  ({s.accuracy - base:+.1%})"
            print(
                f"  {fit:<13}{s.aggregate:<13}{s.accuracy:>9.1%}  "
                f"{s.ci_low:.1%} - {s.ci_high:.1%}  {s.calls_per_item:>8.2f}{gain}"
            )


THRESHOLDS = (0.95, 0.99, 0.999)
"""The posterior the Beta and Dawid–Skene rules stop at: the default, then stricter."""


def early_stop_of(store: Store, bid: str, normalise: bool) -> list[EarlyStopReport]:
    """Every stopping rule on a stored batch, the Dawid–Skene one with a no-gold fit, at each
    of ``THRESHOLDS``."""
    answers = store.batch_answers(bid)
    gold = dict(answers.gold)
    if normalise:
        fmt = store.get_batch(bid).spec.task.format
        gold = {run_id: gold_of(fmt, label) for run_id, label in gold.items()}
    samples: Samples = {}
    for item, row in answers.votes.items():
        if item not in gold:
            continue
        samples[item] = {
            model: [v for v, c in row.get(model, {}).items() for _ in range(c)] or [None]
            for model in answers.models
        }
    fit = fit_reliability(answers.votes)
    n = len(answers.models)
    return [
        compare_early_stop(samples, gold, answers.models, n, threshold=t, draws=20, reliability=fit)
        for t in THRESHOLDS
    ]


def print_early_stop(title: str, reports: list[EarlyStopReport]) -> None:
    """The rules at the default threshold; the two posterior rules at the stricter ones."""
    head = reports[0]
    print(f"\n{title}: early stop, up to N={head.max_n}, {head.items} items, 20 orders each")
    print(f"  {'rule':<22}{'calls/item':>10}{'accuracy':>10}  {'saving':>7}  as accurate as fixed")
    posterior = ("beta", "dawid-skene")
    for report in reports:
        for r in report.rules:
            if report is not head and r.rule not in posterior:
                continue
            name = f"{r.rule} {report.threshold}" if r.rule in posterior else r.rule
            same = "yes" if r.equal_or_better else f"no ({r.accuracy_delta:+.1%})"
            cells = f"{r.calls_per_item:>10.2f}{r.accuracy:>10.1%}  {r.saving:>7.0%}"
            print(f"  {name:<22}{cells}  {same}")
    best = max(
        (r for report in reports for r in report.rules if r.equal_or_better and r.saving > 0),
        key=lambda r: r.saving,
        default=None,
    )
    if best is not None:
        fixed = head.rule("fixed").calls_per_item
        print(
            f"  best at equal or better accuracy: {best.rule} ({best.description}), "
            f"{best.calls_per_item / fixed:.2f}x the calls of fixed N"
        )


def import_cost() -> tuple[float, float]:
    """Seconds to import pandas, then crowd-kit's aggregation, in a fresh process."""
    code = (
        "import time; t = time.perf_counter(); import pandas; p = time.perf_counter() - t; "
        "t = time.perf_counter(); import crowdkit.aggregation; "
        "print(p, time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    pandas_s, crowdkit_s = (float(x) for x in out.split())
    return pandas_s, crowdkit_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000, help="items per scenario batch")
    parser.add_argument("--big", type=int, default=20000, help="items of the timing batch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        with Store(url) as store:
            store.upgrade()
            for name in ("regression", "tickets"):
                started = time.perf_counter()
                bid = run_bundled(url, name)
                took = time.perf_counter() - started
                print_scores(
                    f"bundled set {name}: default sim panel, batch ran in {took:.1f} s",
                    scores_of(store, bid, normalise=True),
                )
                print(calibration_of(store, bid, True))
                print_early_stop(f"bundled set {name}", early_stop_of(store, bid, True))
            for scenario in SCENARIOS.values():
                bid = store_scenario(store, scenario, args.items, args.seed)
                should = "should win" if scenario.learned_should_win else "should not win"
                print_scores(
                    f"scenario {scenario.name} ({scenario.description}; learned {should}), "
                    f"{args.items} items",
                    scores_of(store, bid, normalise=False),
                )
                print(calibration_of(store, bid, False))
                print_early_stop(f"scenario {scenario.name}", early_stop_of(store, bid, False))

            print(f"\ntiming: {args.big} items x 5 models of the uneven scenario")
            started = time.perf_counter()
            big = store_scenario(store, SCENARIOS["uneven"], args.big, args.seed)
            print(f"  written to SQLite in {time.perf_counter() - started:.1f} s (not a fit cost)")
            started = time.perf_counter()
            answers = store.batch_answers(big)
            read_s = time.perf_counter() - started
            print(f"  store.batch_answers: {answers.answers} answers in {read_s:.2f} s")
            fit_reliability(answers.votes, method="one-coin")  # crowd-kit imported once
            for method in ("dawid-skene", "one-coin"):
                started = time.perf_counter()
                fit = fit_reliability(answers.votes, method=method)
                took = time.perf_counter() - started
                print(
                    f"  fit {method:<12} {took:6.2f} s ({fit.iterations} EM iterations), "
                    f"n_eff {fit.independence.effective:.2f} of {fit.independence.voters}"
                )
    pandas_s, crowdkit_s = import_cost()
    print(
        f"\nimport in a fresh process: pandas {pandas_s:.2f} s, then crowd-kit {crowdkit_s:.2f} s "
        f"({crowdkit_s / pandas_s:.1f}x pandas); paid only by a command that fits"
    )


if __name__ == "__main__":
    main()
