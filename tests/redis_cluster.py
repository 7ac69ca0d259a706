"""A local 3-master Redis Cluster on loopback ports, for tests."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import time
from collections.abc import Iterator

from tests.redis_server import RedisServer


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20_000, 50_000)
        try:
            for p in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@contextlib.contextmanager
def running_cluster(masters: int = 3) -> Iterator[list[RedisServer]]:
    nodes = [RedisServer(port=_cluster_port()) for _ in range(masters)]
    try:
        for n in nodes:
            n.args = ["--cluster-enabled", "yes", "--cluster-config-file", str(n.dir / "nodes.conf"),
                      "--cluster-node-timeout", "2000", "--appendonly", "no"]  # fmt: skip
            n.start()
        addrs = [f"127.0.0.1:{n.port}" for n in nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            states = [
                subprocess.run(
                    ["redis-cli", "-p", str(n.port), "CLUSTER", "INFO"],
                    capture_output=True,
                    text=True,
                ).stdout
                for n in nodes
            ]
            if all("cluster_state:ok" in s for s in states):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("cluster did not reach cluster_state:ok")
        yield nodes
    finally:
        for n in nodes:
            n.close()
