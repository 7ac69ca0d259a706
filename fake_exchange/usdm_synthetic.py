"""The derivatives side of a synthetic USD-M market: mark and index price, funding rate, open
interest and liquidations, moving with a symbol's random walk. Pure (the random generator and
the clock are passed in); `SyntheticSource(..., venue=USDM)` drives it.

- `markPrice@1s` (a round-robin channel): mark and index a few basis points around the walk's
  price, every frame; the funding rate moves every `FUNDING_EVERY`-th frame of a symbol (so
  most frames repeat it, as Binance's every-second stream does); `T` the next 8-hour boundary.
  Each frame also moves the symbol's open interest, reported on the internal `openInterest`
  stream (REST only: `GET /fapi/v1/openInterest`; before the first, the source's starting
  open interest, which the server knows from the start).
- `forceOrder` (a round-robin channel): one liquidation, either side, a little through the
  walk's price.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fake_exchange import usdm
from fake_exchange.binance_frames import Payload

FUNDING_EVERY = 5
"""A symbol's funding rate moves on every 5th of its mark price frames."""


@dataclass(slots=True)
class DerivState:
    """One symbol's derivatives state."""

    sym_id: str
    funding_rate: float = 0.0001
    open_interest: float = 0.0
    marks: int = 0


def start_open_interest(price: float, rng: random.Random) -> str:
    """A symbol's open interest before it trades: about a million in quote currency."""
    return f"{rng.uniform(0.5, 1.5) * 1e6 / price:.3f}"


def mark_frame(
    st: DerivState, price: float, now_ms: int, rng: random.Random
) -> tuple[Payload, Payload]:
    """The next `markPriceUpdate` frame and the open-interest event that goes with it."""
    st.marks += 1
    if st.marks % FUNDING_EVERY == 0:
        st.funding_rate = min(max(st.funding_rate + rng.gauss(0.0, 0.00005), -0.003), 0.003)
    mark = price * (1 + rng.gauss(0.0, 0.0002))
    index = price * (1 + rng.gauss(0.0, 0.0002))
    st.open_interest = round(max(st.open_interest * (1 + rng.gauss(0.0, 0.002)), 0.001), 3)
    frame = usdm.mark_price_update(
        st.sym_id,
        now_ms,
        f"{mark:.8f}",
        f"{index:.8f}",
        f"{st.funding_rate:.8f}",
        usdm.next_funding_ms(now_ms),
    )
    oi = usdm.open_interest_event(st.sym_id, now_ms, f"{st.open_interest:.3f}")
    return frame, oi


def liquidation(st: DerivState, price: float, now_ms: int, rng: random.Random) -> Payload:
    """A `forceOrder` frame: SELL (a long liquidated) a little below the price, BUY above."""
    side = "SELL" if rng.random() < 0.5 else "BUY"
    through = price * (1 - 0.002 if side == "SELL" else 1 + 0.002)
    qty = f"{rng.uniform(0.01, 50):.3f}"
    return usdm.force_order(st.sym_id, now_ms, side, f"{through:.8f}", f"{through:.8f}", qty)


__all__ = ["FUNDING_EVERY", "DerivState", "liquidation", "mark_frame", "start_open_interest"]
