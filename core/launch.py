"""``make run``: the dashboard, and the sim server on loopback when no provider key is set, so
the default dashboard exercises exactly the HTTP path real providers use."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from core.auth import binding_refusal, load_settings, secrets_files
from core.errors import InputError, TallyError

ROOT = Path(__file__).resolve().parent.parent
KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")


def wants_sim(env: dict[str, str]) -> bool:
    """The sim server starts unless a real key is set or a sim URL is already given."""
    return not env.get("TALLY_SIM_URL") and not any(env.get(k) for k in KEY_VARIABLES)


def wait_for_port(host: str, port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TallyError(f"nothing answered on {host}:{port} within {timeout_s:g}s")


def dashboard_command(host: str, port: int, env: dict[str, str]) -> list[str]:
    """Streamlit's command line with every setting that matters given here, so neither the
    working directory nor a stray config file decides the address, the secrets or XSRF."""
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")]
    command += ["--server.address", host, "--server.port", str(port)]
    command += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    command += ["--server.enableXsrfProtection", "true"]
    for path in secrets_files(env):
        command += ["--secrets.files", str(path)]
    return command


def launch_dashboard(*, host: str = "127.0.0.1", port: int = 8501, sim_port: int = 8001) -> None:
    env = dict(os.environ)
    refusal = binding_refusal(host, load_settings(env))
    if refusal is not None:
        raise InputError(refusal)
    sim: subprocess.Popen[bytes] | None = None
    if wants_sim(env):
        command = [sys.executable, "-m", "core", "sim-server", "--host", "127.0.0.1"]
        command += ["--port", str(sim_port)]
        # the same knobs the in-process sim reads, so a demo can be sped up or reseeded
        for variable, flag in (
            ("TALLY_SIM_TIME_SCALE", "--time-scale"),
            ("TALLY_SIM_SEED", "--seed"),
        ):
            if env.get(variable):
                command += [flag, env[variable]]
        sim = subprocess.Popen(command, cwd=ROOT)
        wait_for_port("127.0.0.1", sim_port)
        env["TALLY_SIM_URL"] = f"http://127.0.0.1:{sim_port}/v1"
        print(f"no provider key set: simulated panel on {env['TALLY_SIM_URL']}", flush=True)
    command = dashboard_command(host, port, env)
    print(f"dashboard on http://{'localhost' if host == '127.0.0.1' else host}:{port}", flush=True)
    try:
        subprocess.run(command, cwd=ROOT, env=env, check=False)
    except KeyboardInterrupt:
        pass
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(timeout=10)
