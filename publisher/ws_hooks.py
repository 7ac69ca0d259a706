"""Hooks on CCXT's websocket clients: count every frame, and keep a bad one from wedging
the connection (plus the native parser's entry point)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


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
      parses them (True = consumed); everything else goes on to CCXT.
    """
    make_client = client.client

    def guarded_client(url: str) -> Any:
        ws = make_client(url)
        if not getattr(ws, "_marketbus_guarded", False):
            original = ws.handle_text_or_binary_message

            def handle(data: Any) -> Any:
                try:
                    if fast is not None and fast(data, time.time_ns()):
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


__all__ = ["guard_frames", "hook_frames"]
