"""`python -m fake_exchange --recording FILE --loop` (or `--synthetic 50 --rate 10000`,
`--exchange okx`, `--hold-until-subscribed`); the exchanges are `fake_exchange.registry`'s."""

from __future__ import annotations

import argparse
from pathlib import Path

from fake_exchange.cli import EXCHANGES, run
from fake_exchange.registry import HOLD_S, labels


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="fake_exchange", description=f"A fake public exchange: {labels()}"
    )
    p.add_argument("--exchange", choices=EXCHANGES, default="binance", help="protocol to speak")
    p.add_argument("--recording", type=Path, default=None, help="recording (default: bundled)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed; 0 = as fast as possible")
    p.add_argument("--loop", action="store_true", help="replay forever")
    p.add_argument("--synthetic", type=int, default=None, help="synthetic source on N symbols")
    p.add_argument("--rate", type=float, default=1000.0, help="synthetic frames per second")
    p.add_argument(
        "--hold-until-subscribed",
        action="store_true",
        help=f"start the source {HOLD_S:g} s after the first websocket subscription",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    hold = HOLD_S if a.hold_until_subscribed else None
    run(a.recording, a.speed, a.loop, a.synthetic, a.rate, a.host, a.port, a.exchange, hold)


if __name__ == "__main__":
    main()
