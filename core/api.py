"""The facade the CLI, the dashboard and library users call.

``Tally.open()`` wires configuration, provider registry, prices, the HTTP client, the store and
its writer into one engine; ``vote``/``vote_sync`` are the one-call library entry points.
Every run made here is stored the same way, whoever made it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx2

from core import voting
from core.batch import check_gold, check_resumable
from core.config import MAX_CONCURRENCY, Settings, TallyConfig, load_config, load_settings
from core.cost import PriceBook
from core.engine import Engine, EventSink, Recorder, RunRequest, reusable_calls
from core.errors import BusyError, InputError, StoreError, TallyError, not_a_string
from core.estimate import ModelHints, SpendEstimate, estimate, hints_for
from core.formats import parse_format
from core.http import build_client
from core.limits import SharedLimits
from core.panel import ModelSpec, Panel, Slot
from core.policy import TRIGGER, Acceptance, Policy, Quorum, TieBreak, split_trigger
from core.providers.registry import SIM_PROVIDER, Registry, build_registry, sim_served
from core.result import CallResult, CallStatus, MissingVote, RunResult
from core.retry import RetryPolicy
from core.spec import RunSpec
from core.store import BatchItem, Store, StoreWriter
from core.store.lease import BatchOwner
from core.task import Task

if TYPE_CHECKING:
    from core.experiments.reliability import LearnedRevote


def new_id() -> str:
    return uuid.uuid4().hex[:16]


class StoreRecorder(Recorder):
    """Sends what the engine reports to the store's single batched writer."""

    def __init__(self, store: Store, writer: StoreWriter) -> None:
        self.store = store
        self.writer = writer

    async def run_started(self, request: RunRequest) -> None:
        await self.writer.start_run(
            request.run_id,
            request.input,
            request.spec,
            source=request.source,
            batch_id=request.batch_id,
            item_id=request.item_id,
            item_index=request.item_index,
            gold=request.gold,
            submitted_by=request.submitted_by,
        )

    async def call_finished(self, run_id: str, call: CallResult, cache_key: str | None) -> None:
        await self.writer.record_call(run_id, call, cache_key=cache_key)

    async def run_finished(self, result: RunResult, source: str) -> None:
        await self.writer.finish_run(result, source=source)

    async def cache_lookup(self, keys: Sequence[str]) -> Mapping[str, CallResult]:
        return await self.writer.cache_lookup(keys)


def build_task(
    *,
    labels: Sequence[str] | None = None,
    synonyms: Mapping[str, str] | None = None,
    conservative: Sequence[str] | None = None,
    answer_format: str | Mapping[str, Any] | None = None,
    template: str = "{input}",
    system: str | None = None,
    name: str = "classify",
    schema: Mapping[str, Any] | None = None,
    tolerance: float | None = None,
) -> Task:
    """A task from the pieces a person names on the command line or in the Run form:
    ``schema`` for the json format, ``tolerance`` for the number format."""
    not_a_string(labels, "labels")
    not_a_string(conservative, "conservative")
    if isinstance(answer_format, Mapping):
        fmt = parse_format(dict(answer_format))
    else:
        kind = answer_format or ("label" if labels else None)
        if kind is None:
            raise InputError("give the labels to vote on (--labels a,b,c) or an answer format")
        data: dict[str, Any] = {"kind": kind}
        if kind == "label":
            if not labels:
                raise InputError("the label format needs --labels a,b,c")
            data.update(
                labels=list(labels),
                synonyms=dict(synonyms or {}),
                conservative_order=list(conservative or ()),
            )
        elif labels:
            raise InputError(f"--labels only applies to the label format, not {kind}")
        if schema is not None:
            if kind != "json":
                raise InputError(f"--schema only applies to the json format, not {kind}")
            data["schema"] = dict(schema)
        if tolerance is not None:
            if kind != "number":
                raise InputError(f"--tolerance only applies to the number format, not {kind}")
            data["tolerance"] = tolerance
        fmt = parse_format(data)
    return Task(name=name, template=template, system=system, format=fmt)


def build_policy(
    *,
    aggregate: str = "majority",
    tie_break: str | Sequence[str] | None = None,
    early_stop: bool = False,
    accept: Sequence[str] = (),
    min_valid: int | None = None,
    count_invalid: bool = False,
    count_errors: bool = False,
    hedge_delay_s: float = 0.0,
) -> Policy:
    not_a_string(accept, "accept")
    agg, k = Policy.parse_aggregation(aggregate)
    parts = tie_break.split(",") if isinstance(tie_break, str) else list(tie_break or ())
    escalate_below, branches = split_trigger(parts)
    chain = tuple(TieBreak.parse(t) for t in branches if t.strip())
    acceptance = None
    for text in accept:
        part = Acceptance.parse(text)
        acceptance = (
            part
            if acceptance is None
            else acceptance.model_copy(
                update={k2: v for k2, v in part.model_dump().items() if v is not None}
            )
        )
    return Policy(
        aggregation=agg,
        k=k,
        quorum=Quorum(min_valid=min_valid, count_invalid=count_invalid, count_errors=count_errors),
        early_stop=early_stop,
        tie_breaks=chain,
        accept=acceptance,
        hedge_delay_s=hedge_delay_s,
        escalate_below=escalate_below,
    )


def tie_break_chain(
    kinds: Iterable[str],
    *,
    escalate_to: str | None = None,
    expand_by: int = 2,
    escalate_below: float | None = None,
) -> list[str]:
    """The chain a form describes, for ``build_policy``: the kinds in the order chosen, with
    the model ``escalate`` asks and the votes ``expand`` draws, which the form asks apart, and
    the ``escalate-below`` trigger when a confidence above 0 is chosen (only with a chain)."""
    chain = []
    for kind in kinds:
        if kind == "escalate":
            chain.append(f"escalate:{escalate_to or ''}")
        elif kind == "expand":
            chain.append(f"expand:{expand_by}")
        else:
            chain.append(kind)
    if chain and escalate_below:
        chain.insert(0, f"{TRIGGER}:{escalate_below:g}")
    return chain


ProgressSink = Callable[[RunResult], None]


@dataclass
class Tally:
    """A configured session: one engine, one HTTP client, one store writer."""

    config: TallyConfig
    settings: Settings
    registry: Registry
    prices: PriceBook
    engine: Engine
    store: Store | None

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        *,
        config: str | Path | None = None,
        database_url: str | None = None,
        persist: bool = True,
        concurrency: int | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        shared_limits: bool | None = None,
    ) -> AsyncIterator[Tally]:
        """``shared_limits`` (default: ``TALLY_SHARED_LIMITS``) keeps the ceilings and the pace
        in the PostgreSQL store, shared with every other process doing so."""
        settings = load_settings()
        cfg = load_config(config)
        registry = build_registry(cfg, settings)
        prices = PriceBook.from_config(cfg)
        ceiling = cfg.defaults.concurrency if concurrency is None else concurrency
        if not 1 <= ceiling <= MAX_CONCURRENCY:
            raise InputError(f"concurrency must be from 1 to {MAX_CONCURRENCY}, got {ceiling}")
        sim_app = None
        if registry.uses_in_process_sim:
            from core.sim.server import create_app

            sim_app = create_app(seed=settings.sim_seed, time_scale=settings.sim_time_scale)
        store = None
        if persist:
            store = Store(database_url or settings.database_url)
            await anyio.to_thread.run_sync(store.ensure_schema)
        retry = RetryPolicy(
            max_attempts=cfg.defaults.max_attempts,
            base_s=cfg.defaults.backoff_base_s,
            max_s=cfg.defaults.backoff_max_s,
        )
        share = settings.shared_limits if shared_limits is None else shared_limits
        if share and store is None:
            raise InputError("shared limits live in the store: they need persist=True")
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                build_client(
                    settings, max_connections=ceiling, sim_app=sim_app, transport=transport
                )
            )
            engine = Engine(
                registry=registry,
                client=client,
                prices=prices,
                concurrency=ceiling,
                call_timeout_s=cfg.defaults.call_timeout_s,
                attempt_timeout_s=cfg.defaults.attempt_timeout_s,
                retry=retry,
            )
            if share:
                assert store is not None
                url = store.engine.url.render_as_string(hide_password=False)
                engine.limits = await stack.enter_async_context(SharedLimits.connect(url))
            if store is None:
                yield cls(cfg, settings, registry, prices, engine, None)
                return
            async with StoreWriter(store) as writer:
                engine.recorder = StoreRecorder(store, writer)
                yield cls(cfg, settings, registry, prices, engine, store)

    def panel(self, models: Sequence[str | ModelSpec], n: int | None = None) -> Panel:
        """The panel of ``models``; without ``n``, ``[defaults] n`` of tally.toml, else one
        slot per model. Every model's provider is checked here, before any call."""
        not_a_string(models, "models")
        panel = Panel.build(list(models), n if n is not None else self.config.defaults.n)  # type: ignore[arg-type]
        for spec in panel.models:
            self.registry.resolve(spec)
        return panel

    async def vote(
        self,
        text: str,
        spec: RunSpec,
        *,
        source: str = "library",
        on_event: EventSink | None = None,
        run_id: str | None = None,
        submitted_by: str | None = None,
    ) -> RunResult:
        request = RunRequest(
            run_id=run_id or new_id(),
            input=text,
            spec=spec,
            source=source,
            submitted_by=submitted_by,
        )
        return await self.engine.run(request, on_event=on_event)

    async def vote_job(
        self,
        text: str,
        spec: RunSpec,
        *,
        source: str = "library",
        on_event: EventSink | None = None,
        submitted_by: str | None = None,
    ) -> RunResult:
        """One vote as a job of this process, listed by ``tally jobs`` while it runs and kept
        with what it made (``core.jobs``); without the store, the vote alone. Its failure is
        raised; a cancel from elsewhere (``tally jobs cancel``) is a TallyError."""
        if self.store is None:
            return await self.vote(text, spec, source=source, on_event=on_event)
        from core.jobs.model import JobKind
        from core.jobs.specs import VoteSpec
        from core.jobs.work import Hooks, run_here

        run_id = new_id()
        self.engine.validate(RunRequest(run_id=run_id, input=text, spec=spec))
        vote = VoteSpec(
            run_id=run_id,
            input=text,
            spec=spec.to_json(),
            source=source,
            submitted_by=submitted_by,
        )
        finished = await run_here(
            self,
            JobKind.VOTE,
            vote.model_dump(),
            hooks=Hooks(on_event=on_event),
            submitted_by=submitted_by,
            total=spec.panel.n,
            result_ref=run_id,
        )
        if not isinstance(finished.value, RunResult):
            raise TallyError(f"the vote stopped: {finished.job.error or finished.job.status}")
        return finished.value

    async def revote(
        self,
        run_ids: Iterable[str],
        policy: Policy | None = None,
        *,
        expand: bool = False,
        respec: Callable[[RunSpec], RunSpec] | None = None,
        posteriors: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[RunResult]:
        """Decide stored runs again under ``policy`` (default: each run's own, which gives
        its own decision back): stored answers are reused (marked as reused, costing nothing
        new); only escalate/expand branches call models.

        Slots whose call was cancelled (early stop, fastest-acceptable, the user) have no
        vote, by the rule resume follows too (:func:`core.engine.reusable_calls`). They are not
        called unless ``expand`` is set, which calls just them; when their votes could change
        the decision, ``result.missing`` names them. ``respec`` turns each run's spec into the
        one to decide by (learned weights, for one); ``posteriors`` (by run id, label ->
        probability) decides a run by a fitted posterior instead of its count, and its new
        spec's policy keeps that posterior (a re-vote under its own policy decides alike)."""
        store = self._need_store()
        results = []
        for run_id in run_ids:
            old = await anyio.to_thread.run_sync(store.get_run, run_id)
            spec = old.spec if policy is None else old.spec.model_copy(update={"policy": policy})
            if respec is not None:
                spec = respec(spec)
            if posteriors is not None:  # the spec keeps it: a re-vote under it decides alike
                learned = posteriors.get(run_id)
                policy_of = {"posterior": None if learned is None else dict(learned)}
                spec = spec.model_copy(update={"policy": spec.policy.model_copy(update=policy_of)})
            stored = {(c.phase, c.slot): c for c in old.calls if c.phase == "panel"}
            done = reusable_calls(stored.values())
            missing = [s for s in spec.panel.slots() if ("panel", s.index) not in done]
            prior = {key: reused(call) for key, call in done.items()}
            if not expand:  # kept without a vote: nothing is called for them
                for slot in missing:
                    call = stored.get(("panel", slot.index)) or CallResult(
                        slot=slot.index,
                        model=slot.model.name,
                        sample=slot.sample,
                        status=CallStatus.CANCELLED,
                        error="no call stored",
                    )
                    prior[("panel", slot.index)] = reused(call)
            request = RunRequest(
                run_id=new_id(),
                input=old.input,
                spec=spec,
                source="revote",
                batch_id=None,
                item_id=old.item_id,
                gold=old.gold,
            )
            result = await self.engine.run(request, prior=prior)
            if not expand and missing:
                result.missing = votes_needed(result, missing)
            results.append(result)
        return results

    async def revote_learned(
        self,
        batch_id: str,
        policy: Policy | None = None,
        *,
        method: str = "dawid-skene",
        clamp_gold: bool = False,
    ) -> LearnedRevote:
        """Fit the batch's stored answers, then decide every run by the fit's posterior, through
        the quorum and tie-break chain of ``policy`` (no new calls unless the chain escalates or
        expands). The new runs' specs carry the learned weights as their record."""
        from core.experiments.reliability import (
            LearnedRevote,
            batch_reliability,
            learned_spec,
        )

        store = self._need_store()
        report, fit = await anyio.to_thread.run_sync(
            lambda: batch_reliability(store, batch_id, method=method, clamp_gold=clamp_gold)
        )
        rows = await anyio.to_thread.run_sync(store.batch_runs, batch_id)
        runs = [r for r in rows if r.status != "running"]
        results = await self.revote(
            [r.run_id for r in runs],
            respec=lambda spec: learned_spec(spec, report.weights, policy),
            posteriors=fit.posterior,
        )
        confidence = {new.run_id: new.decision.confidence for new in results}
        return LearnedRevote(reliability=report, runs=results, confidence=confidence)

    def calls_needed(self, policy: Policy) -> bool:
        """Whether re-voting under ``policy`` may call models (escalate/expand branches)."""
        return any(b.kind in ("escalate", "expand") for b in policy.tie_breaks)

    def check_run(self, text: str, spec: RunSpec) -> None:
        """Everything that can refuse a run, checked before a row is written or a call made."""
        self.engine.validate(RunRequest(run_id="check", input=text, spec=spec))

    def estimate(
        self, spec: RunSpec, inputs: Sequence[str], *, ceiling: int | None = None
    ) -> SpendEstimate:
        """What running ``spec`` once per input will spend, told before any call: calls,
        estimated cost from the price book, expected time from the ceilings (core.estimate).
        Raises the InputError a run of it would (an input the template cannot take).
        ``ceiling`` replaces the engine's global concurrency ceiling (a sweep's level)."""
        models = [m.name for m in spec.panel.models]
        models += [b.model.name for b in spec.policy.tie_breaks if b.model is not None]
        scale = self.settings.sim_time_scale if self.settings.sim_url is None else 1.0
        sim = {
            f"{SIM_PROVIDER}:{name}": ModelHints(
                tokens_out=int(model.tokens_out), latency_s=model.latency_median_ms * scale / 1000
            )
            for name, model in sim_served().items()
        }
        unseen = [m for m in models if m not in sim]
        history = self.store.recent_latencies(unseen) if self.store and unseen else {}

        def provider_of(model: ModelSpec) -> tuple[str, int]:
            provider = self.registry.resolve(model)
            return provider.name, provider.max_concurrency

        return estimate(
            spec,
            inputs,
            prices=self.prices,
            supports_n=lambda model: bool(self.registry.resolve(model).supports_n),
            provider_of=provider_of,
            hints=hints_for(models, sim=sim, history_ms=history),
            ceiling=self.engine.concurrency if ceiling is None else ceiling,
        )

    async def run_batch(
        self,
        items: Sequence[BatchItem],
        spec: RunSpec,
        *,
        name: str = "batch",
        source: str = "cli",
        columns: Mapping[str, str | None] | None = None,
        on_result: ProgressSink | None = None,
        on_event: EventSink | None = None,
        batch_id: str | None = None,
    ) -> str:
        """Every item a run, all sharing the engine's one global ceiling. With ``batch_id`` of
        an interrupted batch, finished runs are skipped and finished calls reused."""
        store = self._need_store()
        self.check_batch(items, spec, new=batch_id is None)
        if batch_id is None:
            batch_id = await anyio.to_thread.run_sync(
                lambda: store.create_batch(
                    name=name,
                    source=source,
                    spec=spec,
                    columns=dict(columns or {}),
                    concurrency=self.engine.concurrency,
                    items=[(i.index, i.item_id, i.text, i.gold) for i in items],
                )
            )
        else:
            check_resumable(await anyio.to_thread.run_sync(store.get_batch, batch_id))
        owner = BatchOwner.here()
        lease_s = self.settings.batch_lease_s
        # runs in flight at once: enough to keep every call slot busy, few enough to stay small
        runs_at_once = anyio.CapacityLimiter(max(4, self.engine.concurrency * 2))

        async def one(item: BatchItem) -> None:
            async with runs_at_once:
                run_id = batch_run_id(batch_id, item.index)
                prior = reusable_calls(finished.pop(run_id, ()))
                request = RunRequest(
                    run_id=run_id,
                    input=item.text,
                    spec=spec,
                    source="batch",
                    batch_id=batch_id,
                    item_id=item.item_id,
                    item_index=item.index,
                    gold=item.gold,
                    bulk=True,
                )
                result = await self.engine.run(request, on_event=on_event, prior=prior)
                if on_result is not None:
                    on_result(result)

        status = "interrupted"
        lost = anyio.Event()
        # whatever ends the batch releases the claim (releasing one never made changes nothing),
        # a cancel that lands as the claim or the reads below return included
        try:
            # claimed before anything is read: what a dead owner finished is what this one reuses
            await anyio.to_thread.run_sync(lambda: store.claim_batch(batch_id, owner, lease_s))
            done = await anyio.to_thread.run_sync(store.runs_done, batch_id)
            # what an interrupted attempt already paid for, read once for the whole batch
            finished = await anyio.to_thread.run_sync(store.batch_finished_calls, batch_id)
            async with anyio.create_task_group() as outer:
                outer.start_soon(
                    keep_lease, store, batch_id, owner.token, lease_s, lost, outer.cancel_scope
                )
                async with anyio.create_task_group() as tg:
                    for item in items:
                        if item.index not in done:
                            tg.start_soon(one, item)
                status = "done"
                outer.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.flush()
                await anyio.to_thread.run_sync(store.release_batch, batch_id, owner.token, status)
        if lost.is_set():
            raise BusyError(f"batch {batch_id} was taken over by another process: stopped here")
        return batch_id

    def check_batch(self, items: Sequence[BatchItem], spec: RunSpec, *, new: bool = True) -> None:
        """Everything that can refuse a batch, checked before its row is written or a call
        made: there are rows, every input renders, the policy, models and branches are ones
        the engine can run (a majority over free text, an unknown provider), and, for a new
        batch, every gold value is one the task can read."""
        if not items:
            raise InputError("the batch has no rows")
        for item in items:
            try:
                spec.task.render(item.text)
            except InputError as err:
                label = item.item_id if item.item_id is not None else f"row {item.index + 1}"
                raise InputError(f"{label}: {err}") from None
        if new:
            check_gold(spec.task.format, items)
        self.engine.validate(RunRequest(run_id="check", input=items[0].text, spec=spec))

    async def flush(self) -> None:
        recorder = self.engine.recorder
        if isinstance(recorder, StoreRecorder):
            await recorder.writer.flush()

    def _need_store(self) -> Store:
        if self.store is None:
            raise InputError("this needs the store, but persistence is off")
        return self.store


def reused(call: CallResult) -> CallResult:
    """A stored call as a re-vote shows it: reused, costing nothing new. No request is made,
    so its cost is a known 0 even where the stored call's was unknown (that cost stays on the
    stored run; a re-vote does not pay it, or its known part, again)."""
    return call.model_copy(update={"cached": True, "cost_usd": 0.0, "cost_known_usd": 0.0})


def votes_needed(result: RunResult, missing: Sequence[Slot]) -> list[MissingVote]:
    """The missing slots, when their votes could still change the re-vote's decision."""
    spec = result.spec
    absent = {s.index for s in missing}
    counted = [c for c in result.calls if c.phase != "escalate" and c.slot not in absent]
    weights = [s.model.weight for s in missing]
    if voting.is_settled(counted, weights, spec.policy, spec.task.format, spec.panel.weights):
        return []
    return [MissingVote(slot=s.index, model=s.model.name) for s in missing]


async def keep_lease(
    store: Store,
    batch_id: str,
    token: str,
    lease_s: float,
    lost: anyio.Event,
    batch: anyio.CancelScope,
) -> None:
    """Renew the batch's lease every third of it while the batch runs. When another process
    has taken the batch over, set ``lost`` and cancel ``batch`` (its calls): two owners
    would pay for the same calls. A renewal the store fails is tried again
    at the next beat."""
    while True:
        await anyio.sleep(lease_s / 3)
        try:
            held = await anyio.to_thread.run_sync(store.renew_lease, batch_id, token, lease_s)
        except StoreError:
            continue
        if not held:
            lost.set()
            batch.cancel()
            return


def batch_run_id(batch_id: str, index: int) -> str:
    """Stable per item, so a resumed batch finds the runs and calls it already has."""
    return f"{batch_id}-{index:06d}"


async def vote(
    text: str,
    *,
    models: Sequence[str] = ("sim:sim-strong",),
    n: int | None = None,
    labels: Sequence[str] | None = None,
    task: Task | None = None,
    policy: Policy | None = None,
    aggregate: str = "majority",
    tie_break: str | None = None,
    early_stop: bool = False,
    config: str | Path | None = None,
    database_url: str | None = None,
    persist: bool = True,
    on_event: EventSink | None = None,
) -> RunResult:
    """One vote, end to end.

    ``await vote("...", labels=["a", "b"], models=["sim:sim-mid"], n=5)``
    """
    not_a_string(models, "models")
    task = task or build_task(labels=labels)
    policy = policy or build_policy(aggregate=aggregate, tie_break=tie_break, early_stop=early_stop)
    async with Tally.open(config=config, database_url=database_url, persist=persist) as tally:
        spec = RunSpec(task=task, panel=tally.panel(models, n), policy=policy)
        return await tally.vote_job(text, spec, on_event=on_event)


def vote_sync(text: str, **kwargs: Any) -> RunResult:
    """The blocking form of :func:`vote`, for scripts and notebooks without an event loop."""
    try:
        asyncio.get_running_loop()  # a notebook's loop is asyncio's; only detected here
    except RuntimeError:
        pass
    else:
        raise InputError(
            "vote_sync cannot run inside a running event loop (a notebook, async code): "
            "use `await vote(...)` instead"
        )

    async def main() -> RunResult:
        return await vote(text, **kwargs)

    return anyio.run(main)
