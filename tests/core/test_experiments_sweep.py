"""The throughput wall over loopback: the sim server in its three modes, swept through the
engine. Only verdicts are asserted, never timings: the sim answers in about 75 ms at the scale
used, long next to the client's own overhead on a loaded machine, so the shapes are the
server's and not the test machine's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from core.analysis.sweeps import TOOL_BOUND_WARNING
from core.api import Tally
from core.config import load_config
from core.errors import InputError, TallyError
from core.experiments import SweepReport, check_levels, run_sweep
from core.experiments.sweep import calls_at, load_report, sweep_and_store
from core.sim.server import serve_in_thread
from core.store import Store

SCALE = 0.25  # sim-fast: about 75 ms per call
CALLS = 8


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_TRUST_ENV", "0")  # loopback never goes through a proxy
    for name in ("TALLY_CONFIG", "TALLY_SIM_URL"):
        monkeypatch.delenv(name, raising=False)


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "tally.toml"
    path.write_text(
        "# the sim server under test\n"
        "[providers.wall]\n"
        'kind = "openai"\n'
        f'base_url = "{url}"\n'
        "max_concurrency = 8  # measured, not guessed\n"
    )
    return path


def sweep(config: Path, levels: list[int], calls: int = CALLS) -> SweepReport:
    async def main() -> SweepReport:
        async with Tally.open(config=config, persist=False, concurrency=max(levels)) as tally:
            return await run_sweep(tally, "wall:sim-fast", levels, calls_per_level=calls)

    return anyio.run(main)


def served(url: str) -> int:
    return int(httpx2.get(url + "/stats", timeout=5).json()["requests"])


@pytest.fixture
def capacity_one() -> Iterator[str]:
    # slower calls than elsewhere: served one at a time, a loaded client's own delays would
    # otherwise stand out enough against the sim's to read as throughput still rising
    with serve_in_thread(time_scale=3 * SCALE, capacity=1) as url:
        yield url


def test_a_server_that_serves_one_request_at_a_time_serialises(
    tmp_path: Path, capacity_one: str
) -> None:
    levels = [1, 2, 4]
    report = sweep(write_config(tmp_path, capacity_one), levels)
    verdict = report.verdict
    print(f"\ncapacity 1: {[round(p.throughput, 1) for p in verdict.points]} calls/s")
    assert verdict.shape == "serialises"
    assert verdict.ceiling == 1
    assert "serves one request at a time: parallel calls only queue" in verdict.message
    assert verdict.warning == TOOL_BOUND_WARNING
    # the probe, then every level's calls, each sent once
    assert report.calls == 1 + sum(calls_at(level, CALLS) for level in levels)
    assert served(capacity_one) == report.calls
    assert all(p.errors == 0 for p in verdict.points)


def test_a_server_under_contention_peaks_near_eight_and_falls(tmp_path: Path) -> None:
    with serve_in_thread(time_scale=SCALE, contention=8) as url:
        report = sweep(write_config(tmp_path, url), [2, 4, 8, 16, 32])
    verdict = report.verdict
    print(f"\ncontention 8: {[round(p.throughput, 1) for p in verdict.points]} calls/s")
    assert verdict.shape == "falls"
    assert 4 <= verdict.peak <= 16
    assert verdict.ceiling is not None and 4 <= verdict.ceiling <= 16


def test_an_unlimited_server_scales(tmp_path: Path) -> None:
    levels = [1, 2, 4, 8]
    # slower calls here: an unlimited server is the one shape whose top level needs the
    # client to keep up (8 calls in flight at 150 ms is about 50 calls/s)
    with serve_in_thread(time_scale=2 * SCALE) as url:
        report = sweep(write_config(tmp_path, url), levels)
    verdict = report.verdict
    print(f"\nunlimited: {[round(p.throughput, 1) for p in verdict.points]} calls/s")
    assert verdict.shape == "scales" or verdict.ceiling == levels[-1]


def test_the_ceiling_is_saved_into_the_file_in_use(tmp_path: Path, capacity_one: str) -> None:
    config = write_config(tmp_path, capacity_one)
    db = f"sqlite:///{tmp_path / 'sweeps.db'}"

    async def main() -> SweepReport:
        return await sweep_and_store(
            "wall:sim-fast", [1, 2, 4], config=config, database_url=db, save=True
        )

    report = anyio.run(main)
    ceiling = report.verdict.ceiling
    assert ceiling is not None and report.verdict.shape != "scales"
    assert report.saved is not None and report.saved.max_concurrency == ceiling
    assert report.saved.path == str(config)
    assert load_config(config).providers["wall"].max_concurrency == ceiling
    text = config.read_text()
    assert "# the sim server under test" in text and "# measured, not guessed" in text
    with Store(db) as store:
        assert store.list_sweeps()[0].name == "wall:sim-fast"
        # the sweep is stored before the file is touched: a file that cannot be edited never
        # costs the measurement
        assert load_report(store, report.sweep_id or "") == report.model_copy(
            update={"saved": None}
        )


def test_saving_without_a_config_file_is_refused_before_any_call(
    tmp_path: Path, capacity_one: str
) -> None:
    async def main() -> SweepReport:
        return await sweep_and_store(
            "sim:sim-fast", [1, 2], database_url=f"sqlite:///{tmp_path / 's.db'}", save=True
        )

    with pytest.raises(InputError, match=r"no tally\.toml is in use"):
        anyio.run(main)


def test_an_unreachable_endpoint_stops_the_sweep_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/v1")  # the discard port: nobody there
    with pytest.raises(TallyError) as err:
        sweep(config, [1, 2])
    assert err.value.exit_code == 1
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("sweep of wall:sim-fast stopped: the probe call failed")
    assert message.endswith("nothing was measured")


def test_levels_are_checked() -> None:
    assert check_levels([8, 1, 2, 2]) == [1, 2, 8]
    with pytest.raises(InputError, match="at least two"):
        check_levels([4])
    with pytest.raises(InputError, match="from 1 to"):
        check_levels([0, 2])
    assert calls_at(1, 16) == 16 and calls_at(32, 16) == 128
