"""A subset of a batch is routed to the batch's connection in CCXT's Binance hash table."""

from __future__ import annotations

from typing import Any

from publisher.stream_routing import TABLE_KEY, keep_on_batch_connection


class _Client:
    def __init__(self, table: dict[str, str] | None) -> None:
        self.options: dict[str, Any] = {} if table is None else {TABLE_KEY: table}


def test_every_kind_of_stream_of_the_batch_routes_the_subset_to_its_connection() -> None:
    table = {
        "multipleTrades::A/USDT,B/USDT,C/USDT": "0",
        "ticker::A/USDT,B/USDT,C/USDT": "1",
        "multipleTrades::D/USDT": "2",  # another batch
    }
    client = _Client(table)
    assert (
        keep_on_batch_connection(client, ["A/USDT", "B/USDT", "C/USDT"], ["C/USDT", "A/USDT"]) == 2
    )
    assert table["multipleTrades::C/USDT,A/USDT"] == "0"  # the order CCXT will hash
    assert table["ticker::C/USDT,A/USDT"] == "1"
    assert "multipleTrades::D/USDT" in table and len(table) == 5


def test_a_stale_route_for_the_subset_is_replaced() -> None:
    table = {"multipleTrades::A/USDT,B/USDT": "0", "multipleTrades::A/USDT": "3"}
    keep_on_batch_connection(_Client(table), ["B/USDT", "A/USDT"], ["A/USDT"])
    assert table["multipleTrades::A/USDT"] == "0"


def test_adapters_without_the_table_and_other_batches_are_left_alone() -> None:
    assert keep_on_batch_connection(_Client(None), ["A/USDT", "B/USDT"], ["A/USDT"]) == 0
    assert keep_on_batch_connection(object(), ["A/USDT"], ["A/USDT"]) == 0
    table = {"multipleTrades::A/USDT,B/USDT,C/USDT": "0"}
    assert keep_on_batch_connection(_Client(table), ["A/USDT", "B/USDT"], ["A/USDT"]) == 0
    assert keep_on_batch_connection(_Client(table), ["A/USDT", "B/USDT", "C/USDT"], []) == 0
    assert len(table) == 1
