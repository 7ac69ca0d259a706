"""The fault table of docs/reliability.md against Binance spot, Binance USD-M and OKX (cells: ``tests/e2e/fault_cells.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.fault_cells import CELLS, Result, print_results, run_cell
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

VENUES = ("binance", "binanceusdm", "okx")
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


def test_the_two_modules_cover_every_exchange_of_the_table() -> None:
    from tests.e2e import fault_cells, test_fault_matrix_more

    assert set(VENUES) | set(test_fault_matrix_more.VENUES) == set(fault_cells.VENUES)
