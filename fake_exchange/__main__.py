"""`python -m fake_exchange --recording FILE --loop` (or `--synthetic 50 --rate 10000`,
`--exchange okx|bybit`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fake_exchange.cli import EXCHANGES, run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="fake_exchange", description="Fake Binance spot, OKX v5 or Bybit v5 public exchange"
    )
    p.add_argument("--exchange", choices=EXCHANGES, default="binance", help="protocol to speak")
    p.add_argument("--recording", type=Path, default=None, help="recording (default: bundled)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed; 0 = as fast as possible")
    p.add_argument("--loop", action="store_true", help="replay forever")
    p.add_argument("--synthetic", type=int, default=None, help="synthetic source on N symbols")
    p.add_argument("--rate", type=float, default=1000.0, help="synthetic frames per second")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    run(a.recording, a.speed, a.loop, a.synthetic, a.rate, a.host, a.port, a.exchange)


if __name__ == "__main__":
    main()
