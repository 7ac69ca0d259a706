"""The fault table of docs/reliability.md against Bybit, Coinbase and Kraken (cells: ``tests/e2e/fault_cells.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.fault_cells import CELLS, Result, print_results, run_cell
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

VENUES = ("bybit", "coinbase", "kraken")
RESULTS: list[Result] = []


@pytest.fixture(scope="module", autouse=True)
def _print_results(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    print_results(request, RESULTS)


@pytest.mark.parametrize(("exchange", "fault_id"), [c for c in CELLS if c[0] in VENUES])
async def test_fault_on_every_exchange(
    redis_server: RedisServer, exchange: str, fault_id: str
) -> None:
    RESULTS.append(await run_cell(redis_server, exchange, fault_id))
