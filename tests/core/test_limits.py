"""The limits shared by workers in PostgreSQL: ceilings no group of processes passes, slots a
killed process gives back, one pace for every process, and the engine under them."""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest

from core.errors import InputError, StoreError
from core.limits import GLOBAL, LocalLimits, SharedLimits, lock_scope
from core.pacing import Pacer
from core.store import Store
from tests.core.store.conftest import PgDatabases
from tests.core.test_engine import FakeProvider, make_engine, request

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    dbs = PgDatabases()
    url = dbs.create()
    with Store(url) as store:
        store.upgrade()
    yield url
    dbs.drop_all()


async def test_two_processes_together_never_pass_a_ceiling_and_reach_it(pg_url: str) -> None:
    ceiling, holding, most = 3, 0, 0
    full = anyio.Event()

    async def use(limits: SharedLimits) -> None:
        nonlocal holding, most
        async with limits.slot("sim", ceiling):
            holding += 1
            most = max(most, holding)
            if holding == ceiling:
                full.set()
            await full.wait()  # every slot is held at once before any is given back
            await anyio.sleep(0.001)
            holding -= 1

    async with SharedLimits.connect(pg_url) as a, SharedLimits.connect(pg_url) as b:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(use, a if i % 2 else b)
        assert most == ceiling
        assert a.held[lock_scope("sim")] == b.held[lock_scope("sim")] == set()


async def test_a_killed_process_gives_its_slots_back(pg_url: str) -> None:
    """A process holding the whole ceiling is SIGKILLed: its slots are free again without
    any lease to wait out."""
    code = (
        "import anyio, sys\n"
        "from core.limits import SharedLimits\n"
        "async def main():\n"
        "    async with SharedLimits.connect(sys.argv[1]) as limits:\n"
        "        async with limits.slot('sim', 2), limits.slot('sim', 2):\n"
        "            print('holding', flush=True)\n"
        "            await anyio.sleep(600)\n"
        "anyio.run(main)\n"
    )
    proc = await anyio.open_process([sys.executable, "-c", code, pg_url], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        with anyio.fail_after(60):
            said = b""
            while not said.endswith(b"\n"):
                said += await proc.stdout.receive()
        assert said.strip() == b"holding"
        async with SharedLimits.connect(pg_url) as limits:
            with anyio.move_on_after(0.5):  # both slots are taken while it lives
                async with limits.slot("sim", 2):
                    pytest.fail("took a slot another process holds")
            proc.send_signal(signal.SIGKILL)
            with anyio.fail_after(60):
                await proc.wait()
                async with limits.slot("sim", 2), limits.slot("sim", 2):
                    pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.aclose()


async def test_starts_of_every_process_follow_one_pace(pg_url: str) -> None:
    """Two processes pacing one provider at 50 ms claim starts 50 ms apart between them, not
    each on its own; the claimed times are the database's, so slow wake-ups do not matter."""
    async with SharedLimits.connect(pg_url) as a, SharedLimits.connect(pg_url) as b:
        starts = []
        for i in range(10):
            limits = a if i % 2 else b
            starts.append((await limits.claim("paced", 0.05, 0.0)).start)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) == pytest.approx(0.05, abs=1e-6)


async def test_a_spent_bucket_in_one_process_holds_the_others(pg_url: str) -> None:
    slept: list[float] = []
    now = 0.0

    async def fake_sleep(seconds: float) -> None:
        nonlocal now
        slept.append(seconds)
        now += seconds

    async with SharedLimits.connect(pg_url) as a, SharedLimits.connect(pg_url) as b:
        first, other = a.pacer("held", 4), b.pacer("held", 4)
        for pacer in (first, other):
            pacer.clock, pacer.sleep = (lambda: now), fake_sleep
        first.block(30.0)  # a 429 on a spent bucket, Retry-After 30 s
        await first.wait()
        await other.wait()  # has seen no 429 itself
    assert len(slept) == 2 and all(25.0 < s <= 30.0 for s in slept)


async def test_an_interval_learned_by_one_process_paces_another(pg_url: str) -> None:
    async with SharedLimits.connect(pg_url) as a, SharedLimits.connect(pg_url) as b:
        learner = a.pacer("learned", 4)
        learner.interval = 30.0  # what its provider's headers asked for
        await learner.wait()  # its first start: at once, and the interval published
        # the other process has seen no header itself, and still keeps the learned pace
        first, second = await b.claim("learned", None, 0.0), await b.claim("learned", None, 0.0)
    assert second.start - first.start == pytest.approx(30.0, abs=1e-6)
    assert first.delay > 25.0  # behind the learner's start


async def test_two_engines_send_no_more_at_once_than_the_provider_ceiling(pg_url: str) -> None:
    """Two workers' engines, each allowed 2 calls to the provider: together they still keep
    to 2 in flight (the shared ceiling), where on their own they would send 4."""
    provider = FakeProvider("f", {"a": ["regression"]}, delays={"a": 0.02}, max_concurrency=2)
    async with SharedLimits.connect(pg_url) as a, SharedLimits.connect(pg_url) as b:
        engines = [make_engine(provider), make_engine(provider)]
        engines[0].limits, engines[1].limits = a, b
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for engine in engines:
                    for _ in range(3):
                        tg.start_soon(engine.run, request(["f:a"], n=4))
    assert len(provider.requests) == 24
    assert provider.max_in_flight == 2


async def test_the_global_ceiling_is_shared_too(pg_url: str) -> None:
    """Two engines with a global ceiling of 3 and a roomy provider: 3 in flight, not 6."""
    provider = FakeProvider("f", {"a": ["regression"]}, delays={"a": 0.02}, max_concurrency=8)
    async with SharedLimits.connect(pg_url) as a, SharedLimits.connect(pg_url) as b:
        engines = [make_engine(provider, concurrency=3), make_engine(provider, concurrency=3)]
        engines[0].limits, engines[1].limits = a, b
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for engine in engines:
                    tg.start_soon(engine.run, request(["f:a"], n=8))
        assert a.held[lock_scope(GLOBAL)] == b.held[lock_scope(GLOBAL)] == set()
    assert len(provider.requests) == 16
    assert provider.max_in_flight == 3


async def test_in_process_limits_are_the_default() -> None:
    engine = make_engine(FakeProvider("f", {"a": ["regression"]}))
    assert isinstance(engine.limits, LocalLimits)
    assert type(LocalLimits().pacer("f", 4)) is Pacer


async def test_a_sqlite_store_is_refused_with_a_reason(tmp_path: object) -> None:
    with pytest.raises(StoreError, match="PostgreSQL"):
        async with SharedLimits.connect(f"sqlite:///{tmp_path}/x.db"):
            pass


async def test_a_session_opened_with_shared_limits_keeps_them_in_its_store(pg_url: str) -> None:
    from core.api import Tally

    async with Tally.open(database_url=pg_url, shared_limits=True) as tally:
        assert isinstance(tally.engine.limits, SharedLimits)
    async with Tally.open(database_url=pg_url) as tally:
        assert isinstance(tally.engine.limits, LocalLimits)
    with pytest.raises(InputError, match="store"):
        async with Tally.open(persist=False, shared_limits=True):
            pass


async def test_a_wait_cancelled_mid_query_leaves_the_connection_working(pg_url: str) -> None:
    """Calls waiting for a slot are cancelled all the time (early stop, the fastest answer,
    deadlines); psycopg closes a connection whose query is cancelled, which would take every
    slot and pace of the process with it."""
    async with SharedLimits.connect(pg_url) as a, SharedLimits.connect(pg_url) as b:
        async with a.slot("busy", 1):
            for ms in range(40):  # cancelled at every point of the wait, queries included
                with anyio.move_on_after(ms / 2000):
                    async with b.slot("busy", 1):
                        pytest.fail("took a slot another process holds")
                with anyio.move_on_after(ms / 2000):
                    await b.claim("busy", 0.0, 0.0)
        with anyio.fail_after(60):
            async with b.slot("busy", 1):
                assert b.held[lock_scope("busy")] == {0}
        assert not b.conn.closed
