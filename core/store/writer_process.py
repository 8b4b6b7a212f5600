"""The store writer's own process: a busy batch's commits kept off the engine's GIL.

In a worker thread, a commit's driver work (building statements, converting parameters)
holds the GIL the event loop needs, so a CPU-bound batch pays for persistence twice: the work
itself and the hand-off between the two. Once a writer has committed enough to show it is
carrying a batch, it starts this process and sends it the operations instead; the engine's
side then only pickles rows onto a pipe.

The child imports no SQLAlchemy (``core.store.commit`` speaks to the driver), so it is ready
in a fraction of a second rather than the two a full import of the store costs here. It runs
at a lower priority (``NICENESS``): on a machine whose cores the batch keeps busy, the writer
gives way to the engine and the model servers, and only its commits wait; they batch up
meanwhile, and the queue in front of them is what absorbs the delay.

The protocol is length-prefixed pickle frames over the child's stdin and stdout (both ends
are this package, one parent and its own child): the store's ``Target``, then ``("ready", None)``
or ``("error", message)`` back; after that, one list of operations per commit, each answered
with its ``Outcome``. The child ignores Ctrl-C (the terminal sends it to the whole process
group; the engine's side decides what stops) and ends when its input closes, after
committing every frame it received whole: a batch whose engine is SIGKILLed still keeps what
was handed over.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from core.errors import StoreError
from core.store.commit import Committer, Outcome, Target, Write
from core.store.upsert import error_message

_HEADER = struct.Struct(">I")
_ROOT = str(Path(__file__).resolve().parents[2])
"""Where ``core`` is imported from, so the child finds it whatever its working folder."""
_CHILD = "import sys; from core.store.writer_process import main; sys.exit(main())"
NICENESS = 10
"""Added to the child's nice value: a tenth of the engine's share of a core it must share."""
_STOP_TIMEOUT_S = 60.0
"""How long closing waits for the last commits before the process is killed."""


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


class WriterProcess:
    """The engine's side of the writer's process: one commit in flight at a time."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._replies = BufferedByteReceiveStream(process.stdout)

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def start(cls, target: Target) -> WriterProcess:
        """Start the process for ``target``'s database and wait until it is ready."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, env.get("PYTHONPATH")]))
        process = await anyio.open_process(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's log lines go where ours go
            env=env,
        )
        self = cls(process)
        try:
            kind, message = await self._ask(target)
            if kind != "ready":
                raise StoreError(f"the store writer process could not open the store: {message}")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._kill()
            raise
        return self

    async def commit(self, ops: list[Write]) -> Outcome:
        """Have the process commit ``ops``; StoreError when the process is gone (nothing of
        ``ops`` is then known to be written, and writing them again is safe: they are upserts)."""
        outcome = await self._ask(ops)
        assert isinstance(outcome, Outcome)
        return outcome

    async def close(self) -> None:
        """Let the process commit what it was sent and end; kill it if it does not."""
        assert self._process.stdin is not None
        with anyio.CancelScope(shield=True):
            await self._process.stdin.aclose()
            with anyio.move_on_after(_STOP_TIMEOUT_S):
                await self._process.wait()
                return
            await self._kill()

    async def _ask(self, message: Any) -> Any:
        assert self._process.stdin is not None
        try:
            await self._process.stdin.send(_frame(message))
            (size,) = _HEADER.unpack(await self._replies.receive_exactly(_HEADER.size))
            return pickle.loads(await self._replies.receive_exactly(size))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.IncompleteRead):
            with anyio.CancelScope(shield=True):
                await self._kill()
            raise StoreError(
                f"the store writer process ended (exit code {self._process.returncode})"
            ) from None

    async def _kill(self) -> None:
        if self._process.returncode is None:
            self._process.kill()
        await self._process.aclose()


# -- the child -----------------------------------------------------------------------------------


def _read(stream: IO[bytes]) -> Any | None:
    """The next whole frame, or None at the end of input (a cut frame counts as the end)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return pickle.loads(data) if len(data) == size else None


class _Replies:
    """The reply pipe; once nobody reads it (the engine's side is gone), replies are dropped
    and the work goes on."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream: IO[bytes] | None = stream

    def send(self, obj: Any) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(_frame(obj))
            self.stream.flush()
        except BrokenPipeError:
            self.stream = None


def main() -> int:
    """The child: open the store, then commit each frame of operations until input ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):
        os.nice(NICENESS)
    requests, replies = sys.stdin.buffer, _Replies(sys.stdout.buffer)
    sys.stdout = sys.stderr  # nothing but replies may reach the reply pipe
    target = _read(requests)
    if target is None:
        return 0
    assert isinstance(target, Target)
    committer = Committer(target)
    try:
        committer.open()
    except Exception as err:
        replies.send(("error", error_message(target.safe_url, err)))
        return 1
    replies.send(("ready", None))
    try:
        while (ops := _read(requests)) is not None:
            replies.send(committer.commit(ops))
    finally:
        committer.close()
    return 0
