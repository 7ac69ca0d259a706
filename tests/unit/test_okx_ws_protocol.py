"""The fake OKX's websocket request handling, without sockets."""

from __future__ import annotations

import orjson

from fake_exchange.okx.ws_protocol import channel_ok, parse_requests

INSTS = {"BTC-USDT", "ETH-USDT"}


def sub(*args: dict[str, str], op: str = "subscribe") -> str:
    return orjson.dumps({"op": op, "args": list(args)}).decode()


def test_ping_is_its_own_request() -> None:
    assert [r.op for r in parse_requests("ping", "public", "c1", INSTS)] == ["ping"]


def test_one_request_per_arg_and_a_bad_arg_fails_alone() -> None:
    text = sub(
        {"channel": "trades", "instId": "BTC-USDT"},
        {"channel": "trades", "instId": "NOPE-USDT"},
        {"channel": "books", "instId": "ETH-USDT"},
    )
    reqs = parse_requests(text, "public", "c1", INSTS)
    assert [r.op for r in reqs] == ["subscribe", "error", "subscribe"]
    assert reqs[0].key == ("trades", "BTC-USDT") and reqs[2].key == ("books", "ETH-USDT")
    assert reqs[1].error is not None and reqs[1].error["code"] == "60018"


def test_unsubscribe_and_illegal_requests() -> None:
    (r,) = parse_requests(sub({"channel": "tickers", "instId": "BTC-USDT"}, op="unsubscribe"),
                          "public", "c1", INSTS)  # fmt: skip
    assert r.op == "unsubscribe"
    for text in ("not json", '{"op":"login","args":[]}', '{"op":"subscribe","args":[]}'):
        (bad,) = parse_requests(text, "public", "c1", INSTS)
        assert bad.op == "error" and bad.error is not None and bad.error["code"] == "60012"


def test_candles_live_on_business_and_the_rest_on_public() -> None:
    candle = {"channel": "candle1m", "instId": "BTC-USDT"}
    trades = {"channel": "trades", "instId": "BTC-USDT"}
    assert channel_ok("business", candle, INSTS) and not channel_ok("public", candle, INSTS)
    assert channel_ok("public", trades, INSTS) and not channel_ok("business", trades, INSTS)
