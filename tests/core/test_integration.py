"""The whole path over loopback: engine -> OpenAI-compatible provider -> httpx2 -> the sim
server started by the test, with the store recording, and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from typer.testing import CliRunner

from core.api import Tally, build_policy, build_task
from core.cli import app
from core.panel import ModelSpec
from core.result import CallStatus, DecisionStatus
from core.sim.server import serve_in_thread
from core.spec import RunSpec
from core.store import Store

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["regression", "no regression"]
TEXT = "The checkout button is hidden behind the cookie banner on small screens."


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve_in_thread(seed=3, time_scale=0.02) as url:
        yield url


def write_config(tmp_path: Path, url: str, **extra: object) -> Path:
    lines = [
        "[providers.local]",
        'kind = "openai"',
        f'base_url = "{url}"',
        "max_concurrency = 16",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    path = tmp_path / "tally.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def stats(url: str) -> dict[str, object]:
    return dict(httpx2.get(url + "/stats", timeout=5).json())


def test_fan_out_over_loopback_is_stored(tmp_path: Path, sim_url: str) -> None:
    config = write_config(tmp_path, sim_url, supports_n=False)
    db = f"sqlite:///{tmp_path / 't.db'}"

    async def main() -> None:
        async with Tally.open(config=config, database_url=db) as tally:
            panel = tally.panel(["local:sim-strong", "local:sim-mid", "local:sim-fast"], 6)
            result = await tally.vote(
                TEXT,
                spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
            )
            assert len(result.calls) == 6
            assert all(c.status.final for c in result.calls)
            assert sum(result.votes.values()) == sum(
                c.status == CallStatus.OK for c in result.calls
            )
            assert all(c.tokens_in for c in result.calls if c.status == CallStatus.OK)
            await tally.flush()
            stored = Store(db).get_run(result.run_id)
            assert stored.decision == result.decision
            assert [c.slot for c in stored.calls] == list(range(6))

    anyio.run(main)


def test_fastest_acceptable_cancels_the_losers_and_the_server_sees_them_go(
    tmp_path: Path,
) -> None:
    # a slow server scale, so the losers are surely still in flight when the winner lands
    with serve_in_thread(seed=1, time_scale=0.2) as url:
        config = write_config(tmp_path, url, supports_n=False)
        before = stats(url)

        async def main() -> None:
            async with Tally.open(config=config, persist=False) as tally:
                panel = tally.panel(["local:sim-fast", "local:sim-strong", "local:sim-oracle"])
                policy = build_policy(aggregate="fastest")
                result = await tally.vote(
                    TEXT, spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=policy)
                )
                assert result.decision.status == DecisionStatus.DECIDED
                cancelled = [c for c in result.calls if c.status == CallStatus.CANCELLED]
                assert cancelled, "the slower calls should have been cancelled"
                # cut before the server reported usage: unknown, neither estimated nor $0
                assert all(c.cost_usd is None for c in cancelled)
                assert result.cost_usd is None
                assert result.cost_unknown_calls >= len(cancelled)  # local: unpriced too

        anyio.run(main)
        # the server notices the closed connections shortly after
        for _ in range(50):
            after = stats(url)
            if int(after["disconnects"]) > int(before["disconnects"]):  # type: ignore[call-overload]
                break
            anyio.run(anyio.sleep, 0.05)
        assert int(after["disconnects"]) - int(before["disconnects"]) >= 1  # type: ignore[call-overload]


def test_n_samples_in_one_request(tmp_path: Path, sim_url: str) -> None:
    config = write_config(tmp_path, sim_url)
    before = stats(sim_url)

    async def main() -> None:
        async with Tally.open(config=config, persist=False) as tally:
            panel = tally.panel(["local:sim-mid"], 5)
            result = await tally.vote(
                TEXT,
                spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
            )
            assert len(result.calls) == 5
            assert [c.sample for c in result.calls] == [0, 1, 2, 3, 4]
            # the prompt is billed once, on the first sample
            assert result.calls[0].tokens_in and all(c.tokens_in == 0 for c in result.calls[1:])

    anyio.run(main)
    assert int(stats(sim_url)["requests"]) - int(before["requests"]) == 1  # type: ignore[call-overload]


def test_seeded_samples_repeat_exactly(tmp_path: Path, sim_url: str) -> None:
    config = write_config(tmp_path, sim_url, supports_n=False)

    async def once() -> list[str | None]:
        async with Tally.open(config=config, persist=False) as tally:
            spec = ModelSpec(provider="local", model="sim-flaky", params={"seed": 11})
            panel = tally.panel([spec], 7)
            result = await tally.vote(
                TEXT,
                spec=RunSpec(task=build_task(labels=LABELS), panel=panel, policy=build_policy()),
            )
            return [c.raw for c in result.calls]

    assert anyio.run(once) == anyio.run(once)


def test_retries_through_injected_429s(tmp_path: Path) -> None:
    with serve_in_thread(seed=2, time_scale=0.01, faults="429:0.5") as url:
        config = write_config(tmp_path, url, supports_n=False)

        async def main() -> None:
            async with Tally.open(config=config, persist=False) as tally:
                tally.engine.retry = tally.engine.retry.__class__(
                    max_attempts=8, base_s=0.001, max_s=0.01
                )
                panel = tally.panel(["local:sim-mid"], 8)
                result = await tally.vote(
                    TEXT,
                    spec=RunSpec(
                        task=build_task(labels=LABELS), panel=panel, policy=build_policy()
                    ),
                )
                assert sum(c.retries for c in result.calls) > 0
                assert all(c.status == CallStatus.OK for c in result.calls)

        anyio.run(main)


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=ROOT,
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_run_end_to_end(tmp_path: Path, sim_url: str) -> None:
    config = write_config(tmp_path, sim_url)
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    done = cli(
        "run",
        "-",
        "--labels",
        "regression,no regression",
        "--model",
        "local:sim-strong",
        "-n",
        "5",
        "--config",
        str(config),
        "--json",
        env={"TALLY_DATABASE_URL": db},
        stdin=TEXT,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) >= {"run_id", "decision", "votes", "calls", "cost_usd", "latency_ms"}
    assert set(doc["decision"]) >= {"status", "label", "branches"}
    call_keys = {
        "slot",
        "model",
        "status",
        "answer",
        "latency_ms",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "retries",
    }
    assert all(call_keys <= set(c) for c in doc["calls"])
    assert Store(db).get_run(doc["run_id"]).input == TEXT


def test_cli_human_readable_output_shows_calls_and_decision(tmp_path: Path, sim_url: str) -> None:
    config = write_config(tmp_path, sim_url)
    done = cli(
        "run",
        TEXT,
        "--labels",
        "regression,no regression",
        "--model",
        "local:sim-mid",
        "--model",
        "local:sim-fast",
        "--tie-break",
        "conservative",
        "--conservative",
        "regression,no regression",
        "--config",
        str(config),
        "--no-store",
    )
    assert done.returncode == 0, done.stderr
    assert "sim-mid" in done.stdout and ("DECIDED" in done.stdout or "TIE" in done.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "   ", "--labels", "a,b", "--model", "sim:sim-mid"], "input text is empty"),
        (["run", "x", "--labels", "a,b", "--model", "sim:sim-mid", "-n", "0"], "at least 1"),
        (["run", "x", "--labels", "a,b", "--model", "sim:sim-mid", "-n", "100000"], "limit"),
        (["run", "x", "--labels", "a,b", "--model", "nope:m"], "unknown provider"),
        (["run", "x", "--labels", "a,b", "--model", "sim:no-such-model"], "sim"),
        (["run", "x", "--labels", "a,b", "--model", "openai:gpt-4.1-mini"], "OPENAI_API_KEY"),
        (["run", "x", "--model", "sim:sim-mid"], "labels"),
        (["run", "x", "--labels", "a,b"], "model"),
        (
            [
                "run",
                "x",
                "--labels",
                "a,b",
                "--model",
                "sim:sim-mid",
                "--config",
                "/nonexistent.toml",
            ],
            "nonexistent.toml",
        ),
        (["run", "x", "--format", "text", "--model", "sim:sim-mid"], "free text"),
        (
            ["run", "x", "--labels", "a,b", "--model", "sim:sim-mid", "--tie-break", "coin"],
            "tie-break",
        ),
        (["revote", "no-such-run"], "no run"),
        (["batch", "--resume", "no-such-batch", "--model", "sim:sim-mid"], "no batch"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setenv("TALLY_DATABASE_URL", f"sqlite:///{tmp_path / 'bad.db'}")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("TALLY_CONFIG", raising=False)
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert message.lower() in lines[0].lower()
    assert done.stdout == ""


def test_cli_bad_config_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "tally.toml"
    config.write_text(
        "[providers.local]\nkind = 'openai'\nbase_url = 'http://127.0.0.1:9/v1'\n"
        "max_concurrency = 'lots'\n"
    )
    done = cli("run", "x", "--labels", "a,b", "--model", "sim:sim-mid", "--config", str(config))
    assert done.returncode == 2
    assert "max_concurrency" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_store_cache_serves_temperature_zero_and_five_samples_stay_five(
    tmp_path: Path, sim_url: str
) -> None:
    config = write_config(tmp_path, sim_url)
    db = f"sqlite:///{tmp_path / 'cache.db'}"
    before = stats(sim_url)

    async def once() -> list[tuple[int, str | None, bool]]:
        async with Tally.open(config=config, database_url=db) as tally:
            spec = ModelSpec(provider="local", model="sim-flaky", params={"temperature": 0})
            result = await tally.vote(
                TEXT,
                spec=RunSpec(
                    task=build_task(labels=LABELS),
                    panel=tally.panel([spec], 5),
                    policy=build_policy(),
                ),
            )
            return [(c.sample, c.raw, c.cached) for c in result.calls]

    first = anyio.run(once)
    paid = int(stats(sim_url)["requests"]) - int(before["requests"])  # type: ignore[call-overload]
    second = anyio.run(once)
    assert int(stats(sim_url)["requests"]) - int(before["requests"]) == paid  # type: ignore[call-overload]
    assert [s for s, _, _ in second] == [0, 1, 2, 3, 4]
    assert all(cached for _, _, cached in second) and not any(c for _, _, c in first)
    # each sample comes back as its own stored answer, not one answer five times
    assert [raw for _, raw, _ in second] == [raw for _, raw, _ in first]
    assert paid == 5


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("rows.csv", b"id,body\n1,hello\n", [], "no column 'text'"),
        ("empty.csv", b"", [], "empty"),
        ("latin.csv", "text\ncaf\u00e9\n".encode("latin-1"), [], "not UTF-8"),
        ("broken.jsonl", b'{"text": "a"}\n{"text": \n{"text": "c"}\n', [], "line 2"),
        ("rows.csv", b"text,label\nhello,a\n", ["--gold-column", "gold"], "no column 'gold'"),
    ],
)
def test_cli_batch_bad_files_exit_2_and_store_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    content: bytes,
    extra: list[str],
    message: str,
) -> None:
    db = tmp_path / "batch.db"
    monkeypatch.setenv("TALLY_DATABASE_URL", f"sqlite:///{db}")
    path = tmp_path / name
    path.write_bytes(content)
    done = CliRunner().invoke(
        app, ["batch", str(path), "--labels", "a,b", "--model", "sim:sim-mid", *extra]
    )
    assert done.exit_code == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert Store(f"sqlite:///{db}").list_batches() == []
