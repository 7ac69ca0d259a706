"""Connection states of an exchange worker, and the transitions we allow."""

from __future__ import annotations

from enum import StrEnum


class ConnState(StrEnum):
    DISCONNECTED = "DISCONNECTED"
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    RECONNECTING = "RECONNECTING"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
