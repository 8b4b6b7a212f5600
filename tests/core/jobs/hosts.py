"""Worker processes as separate hosts: each in its own network namespace and hostname, reaching
the store and the sim server over a veth link (a socat forwarder on the host side), where the
machine allows it (root, ``ip netns``, ``unshare``, ``socat``); plain processes otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def namespaces_work() -> bool:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "unshare", "socat")):
        return False
    probe = f"tqprobe{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, OSError):
        return False
    _run("ip", "netns", "del", probe)
    return True


@dataclass
class Host:
    name: str
    netns: str | None = None
    address: str | None = None  # the host side of its link: where it finds the services
    forwarders: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def reach(self, url: str) -> str:
        """``url`` (on 127.0.0.1) as this host reaches it."""
        if self.address is None:
            return url
        parts = urlsplit(url)
        netloc = parts.netloc.replace("127.0.0.1", self.address)
        return urlunsplit(parts._replace(netloc=netloc))


class Hosts:
    """Make ``count`` hosts; ``start`` runs a command on one; ``close`` takes them all down."""

    def __init__(self, count: int, ports: list[int]) -> None:
        self.isolated = namespaces_work()
        self.hosts: list[Host] = []
        tag = os.getpid() % 10000
        octet = 100 + os.getpid() % 100
        for i in range(count):
            host = Host(f"tally-host-{i}")
            self.hosts.append(host)
            if not self.isolated:
                continue
            host.netns = f"tq{tag}h{i}"
            outer, inner = f"tq{tag}o{i}", f"tq{tag}i{i}"
            host.address = f"10.{octet}.{i}.1"
            _run("ip", "netns", "add", host.netns)
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            _run("ip", "link", "set", inner, "netns", host.netns)
            _run("ip", "addr", "add", f"{host.address}/24", "dev", outer)
            _run("ip", "link", "set", outer, "up")
            ns = ("ip", "netns", "exec", host.netns)
            _run(*ns, "ip", "addr", "add", f"10.{octet}.{i}.2/24", "dev", inner)
            _run(*ns, "ip", "link", "set", inner, "up")
            _run(*ns, "ip", "link", "set", "lo", "up")
            for port in ports:
                host.forwarders.append(
                    subprocess.Popen(
                        [
                            "socat",
                            f"TCP-LISTEN:{port},bind={host.address},fork,reuseaddr",
                            f"TCP:127.0.0.1:{port}",
                        ]
                    )
                )

    def start(
        self, host: Host, args: list[str], env: Mapping[str, str], stderr: IO[bytes] | int
    ) -> subprocess.Popen[bytes]:
        """``python args`` on ``host``; its pid is the Python process's own (every wrapper
        execs), so a SIGKILL reaches the worker itself."""
        command = [sys.executable, *args]
        if host.netns is not None:
            script = f'hostname {host.name} && exec "$@"'
            command = [
                *("ip", "netns", "exec", host.netns, "unshare", "--uts"),
                *("sh", "-c", script, "sh", *command),
            ]
        return subprocess.Popen(
            command, env=dict(env), stderr=stderr, stdout=subprocess.DEVNULL, cwd=Path.cwd()
        )

    def close(self) -> None:
        for host in self.hosts:
            for proc in host.forwarders:
                proc.kill()
                proc.wait()
            if host.netns is not None:
                subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
