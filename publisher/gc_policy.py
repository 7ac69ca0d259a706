"""Keep Python's full GC passes off the hot path of a publisher.

A ccxt adapter is a few hundred thousand long-lived objects (its API tables, markets and
caches). Every full (generation 2) collection walks all of them: 100-250 ms with the
process stopped, which showed up as the p99 of end-to-end latency (docs/performance.md).
Once a connection's adapter has loaded its markets it is *frozen* (``gc.freeze``): moved
out of the generations the collector scans. When the connection ends it is unfrozen, so
the old adapter's reference cycles (our hooks hold closures over it) are collected and
a reconnecting worker never leaks. Freezing is process-wide, which suits a publisher: what
is alive after a connect is as long-lived as the connection.
"""

from __future__ import annotations

import gc


def connection_ready() -> None:
    """The adapter is built and its markets loaded: stop scanning what is alive now.

    One full collection first, so that no garbage is frozen with it (a closed adapter
    waiting for the collector would otherwise be kept for good): a single pause per
    connect, while other workers' frames wait in their sockets, never lost.
    """
    gc.collect()
    gc.freeze()


def connection_closed() -> None:
    """Let the collector see everything again, the closed adapter's cycles included."""
    gc.unfreeze()


__all__ = ["connection_closed", "connection_ready"]
