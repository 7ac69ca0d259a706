"""What the fake OKX logs for every data frame it writes; the connection itself (outbox,
writer) is shared with the other push-protocol fakes: `fake_exchange.ws_conn`."""

from __future__ import annotations

from dataclasses import dataclass

from fake_exchange.okx.frames import Payload
from fake_exchange.ws_conn import Connection, Key, Out, Outbox, write_loop


@dataclass(frozen=True, slots=True)
class OkxSentFrame:
    """One data frame written to one socket (acks, pongs, errors and garbage are not logged)."""

    conn_id: int
    channel: str
    inst_id: str
    payload: Payload
    sent_ns: int

    @property
    def stream(self) -> str:
        """'channel:instId', the Binance fake's `SentFrame.stream` counterpart."""
        return f"{self.channel}:{self.inst_id}"


__all__ = ["Connection", "Key", "OkxSentFrame", "Out", "Outbox", "write_loop"]
