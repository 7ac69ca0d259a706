"""Hooks on CCXT's websocket clients: count every frame, keep a bad one from wedging the
connection (plus the native parser's entry point), stop reading while the writer is
behind (backpressure), and space what we send within the exchange's message limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from publisher.pacing import WINDOW_MARGIN_S, Spacing, WindowBudget


@runtime_checkable
class ReadGate(Protocol):
    """What the readers ask before reading on: the sink's backpressure state."""

    @property
    def congested(self) -> bool: ...

    async def wait_for_room(self) -> None: ...


def hook_frames(client: Any, on_frame: Callable[[], None]) -> None:
    """Count every frame the exchange sends (liveness), before CCXT dispatches it."""
    original = client.handle_message

    def handle_message(ws_client: Any, message: Any) -> Any:
        on_frame()
        return original(ws_client, message)

    client.handle_message = handle_message


def guard_frames(
    client: Any,
    on_malformed: Callable[[Exception, Any], None],
    fast: Callable[[Any, int], bool] | None = None,
    on_frame: Callable[[], None] | None = None,
) -> None:
    """Wrap the frame handler of every websocket client CCXT creates.

    - A frame CCXT cannot decode or handle (malformed, truncated) must not wedge the socket:
      CCXT decodes and dispatches each frame inside its receive loop's done-callback, where
      an exception never reaches a caller, stops the loop and leaves the watch hanging. The
      error is reported and the frame skipped.
    - With the native parser, ``fast(data, recv_ns)`` takes the frames it knows before CCXT
      parses them (True = consumed); everything else goes on to CCXT. A parser with a
      ``for_url`` (``FastPath``) gets each connection's url first (Bybit's market type).
    """
    make_client = client.client

    def guarded_client(url: str) -> Any:
        ws = make_client(url)
        if not getattr(ws, "_marketbus_guarded", False):
            original = ws.handle_text_or_binary_message
            bind = getattr(fast, "for_url", None)
            take = bind(url) if bind is not None else fast

            def handle(data: Any) -> Any:
                try:
                    if take is not None and take(data, time.time_ns()):
                        if on_frame is not None:
                            on_frame()
                        return None
                    return original(data)
                except Exception as e:
                    on_malformed(e, data)
                    return None

            ws.handle_text_or_binary_message = handle
            ws._marketbus_guarded = True
        return ws

    client.client = guarded_client


def pace_reading(client: Any, gate: ReadGate) -> None:
    """Read no frame while ``gate`` is congested, on every websocket client CCXT creates.

    CCXT reads a socket in ``receive_loop``: it handles every frame aiohttp has buffered,
    then awaits the next one and schedules itself again. While the sink is congested (the
    writer is behind a healthy Redis) that next round waits for room instead. aiohttp's
    buffer then fills, it pauses the transport, the kernel's buffers fill and TCP slows the
    exchange down: the data waits outside the process instead of being dropped inside it.
    The pause lasts as long as the writer needs to halve its backlog (milliseconds at a
    healthy Redis); it never applies during an outage, when the sink spools instead.
    """
    make_client = client.client

    def paced_client(url: str) -> Any:
        ws = make_client(url)
        if getattr(ws, "_marketbus_paced", False):
            return ws
        original = ws.receive_loop

        async def resume() -> None:
            await gate.wait_for_room()
            receive_loop()

        def receive_loop() -> None:
            if gate.congested:
                # the task is referenced by the client until it runs (no orphan task)
                ws._marketbus_resume = asyncio.get_running_loop().create_task(resume())
            else:
                original()

        ws.receive_loop = receive_loop
        ws._marketbus_paced = True
        return ws

    client.client = paced_client


def pace_sending(
    client: Any,
    per_second: float | None,
    subscribes: tuple[int, float] | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> None:
    """Within the exchange's limits on what we send, on each websocket connection CCXT opens.

    - ``per_second``: at most that many messages a second. Binance closes a connection that
      receives more than 5 messages in a second. CCXT spaces its subscribe messages only with
      ``enableRateLimit`` (off against a fake exchange) and at 4 a second; a burst of
      resubscriptions after book resyncs, or live subscription changes, would go out back to
      back. Messages keep their order.
    - ``subscribes`` = (requests, window_s): at most that many subscribe/unsubscribe requests
      in any window (OKX: 480 an hour per connection, then error 60014 and the connection is
      closed). A request past it waits for room (``on_wait(seconds)`` is told), so a storm
      of book resyncs slows down instead of losing the connection.
    """
    make_client = client.client

    def spaced_client(url: str) -> Any:
        ws = make_client(url)
        if getattr(ws, "_marketbus_spaced", False):
            return ws
        original = ws.send
        spacing = Spacing(per_second) if per_second else None
        budget = (
            WindowBudget(subscribes[0], subscribes[1] + WINDOW_MARGIN_S) if subscribes else None
        )

        async def send(message: Any) -> Any:
            if budget is not None and is_subscribe_request(message):
                wait = budget.delay(1)
                if wait > 0 and on_wait is not None:
                    on_wait(wait)
                await budget.acquire(1)
                budget.finish(1)  # counted from now for a window: the exchange counts it so
            if spacing is not None:
                await spacing.wait()
            return await original(message)

        ws.send = send
        ws._marketbus_spaced = True
        ws._marketbus_spacing = spacing
        ws._marketbus_subscribes = budget
        return ws

    client.client = spaced_client


def is_subscribe_request(message: Any) -> bool:
    """An OKX-style ``{"op": "subscribe" | "unsubscribe" | "login", ...}`` request."""
    return isinstance(message, dict) and message.get("op") in ("subscribe", "unsubscribe", "login")


__all__ = [
    "ReadGate",
    "guard_frames",
    "hook_frames",
    "is_subscribe_request",
    "pace_reading",
    "pace_sending",
]
