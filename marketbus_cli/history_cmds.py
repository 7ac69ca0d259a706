"""``marketbus archive`` and ``marketbus sql``: the history commands (docs/history.md).

Registered on the main app by :func:`register`, so this module stays apart from the rest of
the command line; what it shares with it (Redis settings, error handling) is imported when a
command runs.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from marketbus.errors import ConfigError, MarketbusError
from marketbus.keys import stream_pattern

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
_Dir = Annotated[Path, typer.Option("--dir", help="the archive directory")]


def register(app: typer.Typer) -> None:
    """Add ``archive`` and ``sql`` to ``app``."""
    app.command("archive")(archive)
    app.command("sql")(sql)


def archive(
    dir: _Dir,
    redis_url: _RedisUrl = None,
    redis_password_file: _PasswordFile = None,
    streams: Annotated[
        str, typer.Option(help="SCAN pattern of the streams to archive, e.g. 'md:{binance:*}:*'")
    ] = stream_pattern(),
    group: Annotated[str, typer.Option(help="consumer group name")] = "archive",
    name: Annotated[
        str | None, typer.Option(help="consumer name in the group (default: the host name)")
    ] = None,
    roll_mb: Annotated[
        float, typer.Option(min=0.001, help="commit when this many MiB (in memory) are held")
    ] = 64.0,
    roll_age: Annotated[
        float, typer.Option(min=0.001, help="commit at the latest this many seconds after a row")
    ] = 60.0,
    count: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="entries per stream per read")
    ] = 10_000,
    stats_every: Annotated[
        float, typer.Option(min=0.1, help="log the archive's figures this often, seconds")
    ] = 60.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-pretty", help="default: JSON unless stderr is a terminal"),
    ] = None,
) -> None:
    """Archive every record from Redis into Parquet under --dir, until SIGINT/SIGTERM
    (then: commit what is held, acknowledge it, exit 0)."""
    from pydantic import ValidationError

    from archive.config import ArchiveConfig
    from marketbus import logs
    from marketbus_cli import _fail, _redis_settings, _run

    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise _fail(ConfigError(f"--log-level: unknown level {log_level!r}"))
    logs.configure(log_level, log_json)
    try:
        redis = _redis_settings(redis_url, redis_password_file)
        opts: dict[str, Any] = {"streams": streams, "group": group}
        if name is not None:
            opts["name"] = name
        config = ArchiveConfig(
            **opts, roll_bytes=max(1, int(roll_mb * 2**20)), roll_age_s=roll_age, count=count,
            pause_gc=True,  # a process of its own: the GC paused while it catches up
        )  # fmt: skip
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(map(str, err["loc"]))
        raise _fail(ConfigError(f"--{field.replace('_', '-')}: {err['msg']}")) from None
    except MarketbusError as e:
        raise _fail(e) from None
    _run(_archive(redis, dir, config, stats_every))


async def _archive(redis: Any, dir: Path, config: Any, stats_every: float) -> None:
    import structlog

    from archive.archiver import Archiver

    log = structlog.get_logger("marketbus.archive")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.to_thread(dir.mkdir, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--dir: cannot create {dir}: {e}") from None
    async with Archiver(redis, dir, config) as a:
        runner = asyncio.create_task(a.run())
        stopper = asyncio.create_task(stop.wait())
        next_stats = time.monotonic() + stats_every
        try:
            while not (runner.done() or stopper.done()):
                await asyncio.wait(
                    {runner, stopper},
                    timeout=max(0.0, next_stats - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + stats_every
                    log.info("archive_stats", **vars(a.stats))
        finally:
            stopper.cancel()
        if runner.done() and not stop.is_set():
            runner.result()  # the loop's fatal error (credentials): exit 1
        log.info("archive_stopping", held_rows=a.stats.buffered)
    log.info("archive_stopped", **vars(a.stats))


def sql(
    query: Annotated[str, typer.Argument(help="SQL over views trades, ticker, book, candles")],
    dir: _Dir,
    json: Annotated[bool, typer.Option("--json", help="one JSON object per row")] = False,
) -> None:
    """Run SQL (DuckDB) over the archive: a table on a terminal, or --json lines."""
    from marketbus import logs
    from marketbus_cli import _fail

    logs.configure("warning")  # skipped files on stderr: stdout is the result
    try:
        import duckdb

        from archive.sql import connect

        con = connect(dir)
    except MarketbusError as e:
        raise _fail(e) from None
    try:
        cursor = con.execute(query)
        names = [d[0] for d in cursor.description or ()]
        if json:
            _print_json(cursor, names)
        else:
            _print_table(cursor, names)
    except duckdb.Error as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1 if isinstance(e, duckdb.IOException) else 2) from None
    except BrokenPipeError:  # `marketbus sql --json ... | head`
        raise typer.Exit(0) from None
    finally:
        con.close()


def _print_json(cursor: Any, names: list[str]) -> None:
    import orjson

    out = sys.stdout.buffer
    while rows := cursor.fetchmany(10_000):
        out.write(
            b"".join(
                orjson.dumps(dict(zip(names, row, strict=True)), default=str) + b"\n"
                for row in rows
            )
        )
    out.flush()


def _print_table(cursor: Any, names: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*names, show_edge=False, header_style="bold")
    n = 0
    while rows := cursor.fetchmany(10_000):
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        n += len(rows)
    console = Console()
    console.print(table)
    console.print(f"{n:,} row{'s' if n != 1 else ''}", style="dim")
