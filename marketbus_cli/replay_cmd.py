"""``marketbus replay``: archived records back into Redis, under a namespace (docs/history.md).

Registered on the main app by :func:`register`. Exit codes: 0 the range was replayed; 1
nothing to replay (no archived record in the range: Redis untouched) or a run-time error;
2 a usage error, including a namespace that already holds streams without ``--reset``;
130 stopped by SIGINT or SIGTERM (after saying how far it got).
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from marketbus.errors import ConfigError, MarketbusError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help="redis:// or rediss:// URL (no password here: use MARKETBUS_REDIS__PASSWORD "
        "or --redis-password-file). Default: $REDIS_URL, then the config.",
    ),
]
_PasswordFile = Annotated[
    Path | None, typer.Option("--redis-password-file", help="file holding the Redis password")
]


def register(app: typer.Typer) -> None:
    """Add ``replay`` to ``app``."""
    app.command("replay")(replay)


def parse_time(text: str, option: str) -> int:
    """``2026-11-30``, ``2026-11-30T12:00:00Z``, ``2026-11-30 12:00+01:00`` (UTC when no zone
    is given) or milliseconds since the epoch -> milliseconds since the epoch."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{option}: {text!r} is not a time: use 2026-11-30, 2026-11-30T12:00:00Z "
            "or milliseconds since the epoch"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - EPOCH) // timedelta(milliseconds=1)


def parse_speed(text: str) -> float | None:
    """``max`` -> None (as fast as Redis takes them); ``10`` or ``10x`` -> 10.0."""
    value = text.strip().lower()
    if value == "max":
        return None
    try:
        speed = float(value.removesuffix("x"))
    except ValueError:
        speed = 0.0
    if not 0 < speed < float("inf"):
        raise ConfigError(f"--speed: {text!r}: use a positive number (10, 0.5) or max")
    return speed


def replay(
    dir: Annotated[Path, typer.Option("--dir", help="the archive directory")],
    start: Annotated[str, typer.Option(help="first exchange time: 2026-11-30T12:00Z or ms")],
    end: Annotated[str, typer.Option(help="end of the range (excluded), as --start")],
    namespace: Annotated[
        str, typer.Option(help="write to md.<namespace>:{exchange:symbol}:<channel>")
    ],
    markets: Annotated[
        str | None, typer.Option(help="comma-separated: binance:BTC/USDT,okx:ETH/USDT (all)")
    ] = None,
    channels: Annotated[
        str | None, typer.Option(help="comma-separated: trades,ticker,book,candles (all)")
    ] = None,
    speed: Annotated[
        str, typer.Option(help="10: ten times the original pace; max: as fast as Redis takes")
    ] = "max",
    reset: Annotated[
        bool, typer.Option("--reset", help="delete the namespace's streams first (only them)")
    ] = False,
    maxlen: Annotated[
        int, typer.Option(min=0, help="XADD MAXLEN ~ per stream; 0: no trim")
    ] = 100_000,
    redis_url: _RedisUrl = None,
    redis_password_file: _PasswordFile = None,
    stats_every: Annotated[
        float, typer.Option(min=0.1, help="log the progress this often, seconds")
    ] = 60.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "warning",
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-pretty", help="default: JSON unless stderr is a terminal"),
    ] = None,
) -> None:
    """Write archived records of a time range into Redis streams under a namespace, in a
    fixed order (exchange time, then entry id) and with their original ids and spacing
    (scaled by --speed), for bots reading Consumer(..., namespace=NAME)."""
    from pydantic import ValidationError

    from archive.replay import ReplayConfig
    from marketbus import logs
    from marketbus_cli import _channels, _csv, _fail, _redis_settings, _run

    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise _fail(ConfigError(f"--log-level: unknown level {log_level!r}"))
    logs.configure(log_level, log_json)
    try:
        if not dir.is_dir():
            raise ConfigError(f"--dir: no such directory: {dir}")
        config = ReplayConfig(
            namespace=namespace,
            start_ms=parse_time(start, "--start"),
            end_ms=parse_time(end, "--end"),
            markets=tuple(_csv(markets) or ()) if markets is not None else None,
            channels=tuple(_channels(channels)) if channels is not None else None,
            speed=parse_speed(speed),
            reset=reset,
            maxlen=maxlen or None,
        )
        config.selection()  # a malformed market is a usage error, said now
        redis = _redis_settings(redis_url, redis_password_file)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])).replace("_", "-")
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise _fail(ConfigError(f"--{where}: {msg}" if where else msg)) from None
    except MarketbusError as e:
        raise _fail(e) from None
    stats, stopped = _run(_replay(redis, dir, config, stats_every))
    _report(stats, config, stopped)


async def _replay(redis: Any, dir: Path, config: Any, stats_every: float) -> tuple[Any, bool]:
    """The replay, its progress logged; SIGINT/SIGTERM stop it. ``(stats, stopped)``."""
    import structlog

    from archive.replay import Replay

    log = structlog.get_logger("marketbus.replay")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    r = Replay(redis, dir, config)
    runner = asyncio.create_task(r.wait())
    stopper = asyncio.create_task(stop.wait())
    try:
        next_stats = time.monotonic() + stats_every
        while not (runner.done() or stopper.done()):
            await asyncio.wait(
                {runner, stopper},
                timeout=max(0.0, next_stats - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + stats_every
                s = r.stats
                log.warning(
                    "replay_progress", records=s.records, last_ts_ms=s.last_ts_ms,
                    max_lag_ms=s.max_lag_ms,
                )  # fmt: skip
        if not runner.done():
            await r.stop()
        return await runner, stop.is_set() and not r.stats.done
    finally:
        stopper.cancel()
        await r.stop()


def _report(stats: Any, config: Any, stopped: bool) -> None:
    for path, why in sorted(stats.skipped.items()):
        typer.secho(f"skipped {path}: {why}", fg=typer.colors.YELLOW, err=True)
    if stats.records == 0 and not stopped:
        what = ", ".join(config.markets) if config.markets else "any market"
        chans = ", ".join(c.value for c in config.channels) if config.channels else "any channel"
        typer.secho(
            f"nothing to replay: no archived record of {what} ({chans}) with "
            f"{_iso(config.start_ms)} <= exchange time < {_iso(config.end_ms)}"
            + (" (the namespace was left as it was)" if not stats.deleted else ""),
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)
    verb = "stopped after replaying" if stopped else "replayed"
    line = (
        f"{verb} {_n(stats.records, 'record')} into {_n(stats.streams, 'stream')} of namespace "
        f"{config.namespace} ({config.prefix}:{{exchange:symbol}}:<channel>) in "
        f"{stats.elapsed_s:.1f} s ({stats.rate:,.0f} records/s)"
    )
    if stats.max_lag_ms is not None:
        line += f", at most {stats.max_lag_ms:.0f} ms late"
    if stats.deleted:
        line += f"; {_n(stats.deleted, 'stream')} deleted first (--reset)"
    if stats.renumbered:
        line += f"; {_n(stats.renumbered, 'id')} renumbered (exchange time out of arrival order)"
    typer.echo(line)
    if stopped:
        raise typer.Exit(130)


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
