"""The writer's own process: a busy writer moves its commits there, keeps their order, and
loses nothing when that process dies, is interrupted, or its engine is killed."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sqlalchemy.pool import NullPool

from core.errors import StoreError
from core.result import CallResult, RunResult
from core.store import Store, StoreWriter
from core.store.commit import Call, Outcome, Start
from core.store.tables import call_row, start_row
from core.store.writer_process import _CHILD, NICENESS, WriterProcess, _frame
from tests.specs import spec

pytestmark = pytest.mark.anyio

MakeCall = Callable[..., CallResult]
MakeResult = Callable[..., RunResult]
ROOT = Path(__file__).resolve().parents[3]
START: dict[str, Any] = {
    "source": "batch",
    "batch_id": None,
    "item_id": None,
    "item_index": None,
    "gold": None,
    "created_at": 1.0,
}
START_S = 60  # a child starts in under a second; CI machines can be slower


async def in_process(writer: StoreWriter) -> None:
    with anyio.fail_after(START_S):
        while not writer.in_process:  # noqa: ASYNC110 (the writer has no event for it)
            await anyio.sleep(0.05)


async def test_a_busy_writer_commits_from_its_own_process(
    store: Store, make_call: MakeCall, make_result: MakeResult
) -> None:
    async with StoreWriter(store, max_delay=0, process_after=0) as writer:
        await writer.start_run("first", "x", spec(["sim:a"]), source="batch")
        await writer.flush()  # committed from a thread; the process starts meanwhile
        await in_process(writer)

        def refuse(ops: Any) -> Outcome:
            raise AssertionError("a commit was made from the engine's process")

        writer._committer.commit = refuse  # type: ignore[method-assign]
        for i in range(30):
            rid = f"r{i}"
            await writer.start_run(rid, "x", spec(["sim:a"], 3), source="batch")
            for slot in range(3):
                await writer.record_call(rid, make_call(slot, answer=f"{rid}/{slot}"))
            calls = [make_call(s, answer=f"{rid}/{s}") for s in range(3)]
            await writer.finish_run(make_result(rid, calls), source="batch")
            if i % 7 == 0:
                await anyio.lowlevel.checkpoint()  # let some commits go out mid-run
    assert writer.pending == 0 and not writer.in_process  # the process ended with the writer
    for i in range(30):
        got = store.get_run(f"r{i}")
        assert [c.answer for c in got.calls] == [f"r{i}/{s}" for s in range(3)]
        assert got.decision.label == "yes"


async def test_a_dead_writer_process_costs_nothing(store: Store, make_call: MakeCall) -> None:
    """The batch in flight when the process dies is written again from a thread (upserts, so
    writing twice is safe), and the writer goes on from there."""
    async with StoreWriter(store, max_delay=0, process_after=0) as writer:
        await writer.start_run("r", "x", spec(), source="batch")
        await writer.flush()
        await in_process(writer)
        assert writer._process is not None
        os.kill(writer._process.pid, signal.SIGKILL)
        for slot in range(20):
            await writer.record_call("r", make_call(slot))
        await writer.flush()  # no error: nothing was lost
        assert not writer.in_process
    assert [c.slot for c in store.run_calls("r")] == list(range(20))


async def test_a_bad_row_in_the_process_spares_the_rest(store: Store, make_call: MakeCall) -> None:
    """One row breaking a constraint fails alone: the process retries the others one by one
    and reports the failure in one line."""
    async with StoreWriter(store, max_delay=0, process_after=0) as writer:
        await writer.start_run("r", "x", spec(), source="batch")
        await writer.flush()
        await in_process(writer)
        await writer.record_call("r", make_call(0))
        await writer.record_call("ghost", make_call(0))  # no such run: a foreign key error
        await writer.record_call("r", make_call(1))
        with pytest.raises(StoreError, match=r"^1 store write\(s\) failed; first: store ") as err:
            await writer.flush()
        assert "\n" not in str(err.value) and writer.in_process
    assert [c.slot for c in store.run_calls("r")] == [0, 1]


async def test_ctrl_c_does_not_stop_the_writer_process(store: Store, make_call: MakeCall) -> None:
    """The terminal sends Ctrl-C to the whole process group; the engine's side decides what
    stops, and the writer's process goes on committing until its input closes."""
    process = await WriterProcess.start(store.target())
    try:
        os.kill(process.pid, signal.SIGINT)
        await anyio.sleep(0.2)
        row = start_row("r", "x", spec(), **START)
        outcome = await process.commit([Start(row), Call(call_row("r", make_call(0)))])
    finally:
        await process.close()
    assert outcome == Outcome()
    assert len(store.run_calls("r")) == 1


async def test_the_writer_process_gives_way_to_the_engine(store: Store) -> None:
    process = await WriterProcess.start(store.target())
    try:
        niceness = os.getpriority(os.PRIO_PROCESS, process.pid)
    finally:
        await process.close()
    assert niceness == min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS)


async def test_a_store_the_process_cannot_open_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-folder.db").mkdir()
    with Store(f"sqlite:///{tmp_path}/a-folder.db") as store, pytest.raises(StoreError) as err:
        await WriterProcess.start(store.target())
    message = str(err.value)
    assert message.startswith("the store writer process could not open the store: store sqlite:")
    assert "unable to open database file" in message and "\n" not in message


@pytest.mark.parametrize(
    "url", ["sqlite://", "postgresql+psycopg://tally@127.0.0.1:5432/x"], ids=["sqlite", "pg"]
)
def test_the_writer_process_does_not_import_sqlalchemy(url: str) -> None:
    """Importing SQLAlchemy is most of a Python process's start-up here; the writer's process
    must be ready in a fraction of that, so neither its modules nor the store's ``Target`` it
    is sent (a value of SQLAlchemy's own type would import it on unpickling) may need it."""
    code = (
        "import pickle, sys; import core.store.writer_process; "
        "pickle.loads(sys.stdin.buffer.read()); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'sqlmodel', "
        "'pydantic', 'alembic', 'pandas'}))"
    )
    with Store(url) as store:
        target = pickle.dumps(store.target())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], input=target, env=env, capture_output=True, check=True
    )
    assert out.stdout.decode().strip() == "[]"


def test_what_the_process_is_sent_never_shows_the_password() -> None:
    with Store("postgresql+psycopg://tally:s3cret@127.0.0.1:5432/x") as store:
        target = store.target()
    assert target.connect_kwargs["password"] == "s3cret"  # the child needs it
    assert "s3cret" not in repr(target) and "s3cret" not in target.safe_url


@pytest.mark.postgres
@pytest.mark.parametrize("where", ["thread", "process"])
async def test_a_dropped_connection_is_replaced(
    pg_store_url: str, make_call: MakeCall, where: str
) -> None:
    """The writer keeps one connection between batches, in a worker thread or in its own
    process; if the server drops it, the next batch goes out on a new one and nothing is
    lost."""
    from sqlalchemy import create_engine, text

    with Store(pg_store_url) as store:
        process_after = 0 if where == "process" else None
        async with StoreWriter(store, max_delay=0, process_after=process_after) as writer:
            await writer.start_run("kept", "x", spec(), source="library")
            await writer.record_call("kept", make_call(0))
            await writer.flush()
            if where == "process":
                await in_process(writer)
            admin = create_engine(pg_store_url, poolclass=NullPool)
            with admin.begin() as conn:  # every other connection to the database, ours too
                dropped = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar()
            admin.dispose()
            assert dropped
            for slot in range(1, 4):
                await writer.record_call("kept", make_call(slot))
                await writer.flush()  # no error: each batch went out
            assert writer.in_process == (where == "process")  # the same process went on
        assert [c.slot for c in store.run_calls("kept")] == [0, 1, 2, 3]


@pytest.mark.filterwarnings("ignore:Selection of the SingletonThreadPool")
async def test_an_in_memory_store_is_never_handed_to_another_process(
    make_call: MakeCall,
) -> None:
    url = "sqlite:///file:tally-writer?mode=memory&cache=shared&uri=true"
    with Store(url) as store, store.engine.connect():  # the database lives while one is open
        store.upgrade()
        async with StoreWriter(store, max_delay=0, process_after=0) as writer:
            await writer.start_run("r", "x", spec(), source="library")
            for slot in range(5):
                await writer.record_call("r", make_call(slot))
                await writer.flush()
            assert not writer._process_tried
        assert len(store.run_calls("r")) == 5


def test_what_was_handed_over_is_committed_when_the_engine_dies(
    store_url: str, make_call: MakeCall
) -> None:
    """The engine's side killed between two commits: its pipe closes, a frame cut in half is
    dropped, every whole frame is committed, and nobody is left to read the replies."""
    start = start_row("r", "x", spec(), **START)
    frames = [
        _frame(Store(store_url).target()),
        _frame([Start(start), Call(call_row("r", make_call(0)))]),
        _frame([Call(call_row("r", make_call(1)))]),
        _frame([Call(call_row("r", make_call(2)))])[:-3],  # cut off mid-frame
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    gone, replies = os.pipe()
    os.close(gone)  # nobody reads the replies
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=b"".join(frames),
            stdout=replies,
            stderr=subprocess.PIPE,
            env=env,
            timeout=START_S,
            check=False,
        )
    finally:
        os.close(replies)
    assert child.returncode == 0, child.stderr.decode()
    with Store(store_url) as store:
        assert [c.slot for c in store.run_calls("r")] == [0, 1]
