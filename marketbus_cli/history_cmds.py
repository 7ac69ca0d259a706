"""``marketbus archive`` (and ``archive compact|prune|status``) and ``marketbus sql``: the
history commands (docs/history.md).

Registered on the main app by :func:`register`, so this module stays apart from the rest of
the command line; what it shares with it (Redis settings, error handling) is imported when a
command runs. ``marketbus archive --dir ... --redis-url ...`` runs the archiver as it always
did: ``archive`` is a group whose callback is the archiver when no subcommand follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from marketbus.errors import ConfigError, MarketbusError

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
_DirOpt = Annotated[
    str | None,
    typer.Option("--dir", help="the archive directory (default: archive.dir of --config)"),
]
_Config = Annotated[
    Path | None, typer.Option("--config", help="TOML file: its redis and archive sections")
]
_LogLevel = Annotated[str, typer.Option(help="debug, info, warning or error")]
_LogJson = Annotated[
    bool | None,
    typer.Option("--log-json/--log-pretty", help="default: JSON unless stderr is a terminal"),
]
_Grace = Annotated[
    str,
    typer.Option(
        help="keep replaced files this long before deleting them (readers that listed them "
        "just before: 30s, 5m; 0 deletes at once)"
    ),
]

archive_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def register(app: typer.Typer) -> None:
    """Add ``archive`` (with its subcommands ``compact``, ``prune``, ``status``) and ``sql``
    to ``app``."""
    app.add_typer(archive_app, name="archive")
    app.command("sql")(sql)


@archive_app.callback(invoke_without_command=True)
def archive(
    ctx: typer.Context,
    dir: _DirOpt = None,
    config: _Config = None,
    redis_url: _RedisUrl = None,
    redis_password_file: _PasswordFile = None,
    streams: Annotated[
        str | None,
        typer.Option(help="SCAN pattern of the streams to archive (default: every md:{*}:*)"),
    ] = None,
    group: Annotated[str | None, typer.Option(help="consumer group (default: archive)")] = None,
    name: Annotated[
        str | None,
        typer.Option(help="consumer name in the group, one per archiver (default: host name)"),
    ] = None,
    roll_mb: Annotated[
        float | None,
        typer.Option(min=0.001, help="commit when this many MiB (in memory) are held (64)"),
    ] = None,
    roll_age: Annotated[
        float | None,
        typer.Option(min=0.001, help="commit at the latest this many seconds after a row (60)"),
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, max=1_000_000, help="entries per stream per read")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="serve /healthz, /readyz and /metrics on this port"),
    ] = None,
    metrics_host: Annotated[
        str | None, typer.Option(help="address of the endpoints (default 127.0.0.1)")
    ] = None,
    keep_days: Annotated[
        int | None,
        typer.Option(min=1, help="retention: drop dates before today - N days (hourly)"),
    ] = None,
    stats_every: Annotated[
        float, typer.Option(min=0.1, help="log the archive's figures this often, seconds")
    ] = 60.0,
    log_level: _LogLevel = "info",
    log_json: _LogJson = None,
) -> None:
    """Archive every record from Redis into Parquet under --dir, until SIGINT/SIGTERM
    (then: commit what is held, acknowledge it, exit 0). Subcommands: compact, prune,
    status."""
    if ctx.invoked_subcommand is not None:
        return
    from archive.config import from_settings
    from marketbus_cli import _fail, _run

    _logs(log_level, log_json)
    try:
        settings = _settings(config, redis_url, redis_password_file)
        section = settings.archive
        root = _local_dir(dir if dir is not None else section.dir)
        cfg = from_settings(
            section, streams=streams, group=group, name=name, count=count,
            roll_bytes=None if roll_mb is None else max(1, int(roll_mb * 2**20)),
            roll_age_s=roll_age,
            # a process of its own: the GC paused while it catches up (unless the file says)
            pause_gc=True if section.pause_gc is None else None,
        )  # fmt: skip
    except MarketbusError as e:
        raise _fail(e) from None
    ops = _Ops(
        metrics_port=metrics_port if metrics_port is not None else section.metrics_port,
        metrics_host=metrics_host or section.metrics_host,
        maxlen=settings.redis.maxlen,
        status_every_s=section.status_every_s,
        keep_days=keep_days if keep_days is not None else section.keep_days,
        compact=section.compact,
    )
    _run(_archive(settings.redis, root, cfg, stats_every, ops))


class _Ops:
    """What runs beside the archiver: endpoints, status hash, retention and compaction."""

    def __init__(
        self,
        *,
        metrics_port: int | None,
        metrics_host: str,
        maxlen: int,
        status_every_s: float,
        keep_days: int | None,
        compact: bool,
    ) -> None:
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.maxlen = maxlen
        self.status_every_s = status_every_s
        self.keep_days = keep_days
        self.compact = compact


async def _archive(redis: Any, dir: Path, config: Any, stats_every: float, ops: _Ops) -> None:
    import structlog

    from archive.archiver import Archiver
    from archive.compact import maintain
    from archive.metrics import MetricsServer, make_app
    from archive.status import StatusWriter
    from marketbus.redis_client import connect

    log = structlog.get_logger("marketbus.archive")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.to_thread(dir.mkdir, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--dir: cannot create {dir}: {e}") from None
    client = connect(redis)
    a = Archiver(client, dir, config)
    server = None
    if ops.metrics_port is not None:
        server = MetricsServer(make_app(a, ops.maxlen), ops.metrics_port, ops.metrics_host)
        await server.start()
        log.info("archive_metrics_serving", host=ops.metrics_host, port=server.port)
    status = StatusWriter(a, maxlen=ops.maxlen, interval_s=ops.status_every_s)
    background: list[asyncio.Task[None]] = []
    try:
        async with a:
            background.append(asyncio.create_task(status.run(), name="archive-status"))
            if ops.keep_days is not None or ops.compact:
                work = maintain(
                    dir, keep_days=ops.keep_days, compact_days=ops.compact,
                    zstd_level=config.zstd_level, row_group_rows=config.row_group_rows,
                )  # fmt: skip
                background.append(asyncio.create_task(work, name="archive-maintenance"))
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
                for task in background:
                    task.cancel()
                for task in background:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if runner.done() and not stop.is_set():
                runner.result()  # the loop's fatal error (credentials): exit 1
            log.info("archive_stopping", held_rows=a.stats.buffered)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await status.write(final=True)
    finally:
        if server is not None:
            await server.stop()
        with contextlib.suppress(Exception):
            await client.aclose()
    log.info("archive_stopped", **vars(a.stats))


@archive_app.command("compact")
def compact_cmd(
    ctx: typer.Context,
    dir: _DirOpt = None,
    config: _Config = None,
    date: Annotated[
        str | None, typer.Option(help="only this day (YYYY-MM-DD, UTC), whatever its age")
    ] = None,
    older_than: Annotated[
        str, typer.Option(help="days whose end is at least this long ago: 1h, 1d, 90m")
    ] = "1h",
    keep_days: Annotated[
        int | None, typer.Option(min=1, help="first drop dates before today - N days (prune)")
    ] = None,
    grace: _Grace = "30s",
    json: Annotated[bool, typer.Option("--json", help="the report as one JSON object")] = False,
    log_level: _LogLevel = "info",
    log_json: _LogJson = None,
) -> None:
    """Merge each finished day's files into one file per partition, sorted by symbol and
    time; atomic for readers, safe beside running archivers and backfill, resumable."""
    from archive.compact import compact, prune
    from marketbus_cli import _fail

    _logs(log_level, log_json)
    try:
        root = _maintained_dir(ctx, dir, config)
        if date is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
            raise ConfigError(f"--date: {date!r} is not YYYY-MM-DD")
        older = parse_duration("--older-than", older_than)
        wait = parse_duration("--grace", grace)
        reports = []
        if keep_days is not None:
            reports.append(("pruned", prune(root, keep_days, grace_s=wait)))
        reports.append(("compacted", compact(root, date=date, older_than_s=older, grace_s=wait)))
    except MarketbusError as e:
        raise _fail(e) from None
    except OSError as e:
        raise _fail(ConfigError(f"{root}: {e}")) from None
    _print_reports(reports, json)


@archive_app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    dir: _DirOpt = None,
    config: _Config = None,
    keep_days: Annotated[
        int | None,
        typer.Option(min=1, help="drop dates before today - N days (default: archive.keep_days)"),
    ] = None,
    grace: _Grace = "30s",
    json: Annotated[bool, typer.Option("--json", help="the report as one JSON object")] = False,
    log_level: _LogLevel = "info",
    log_json: _LogJson = None,
) -> None:
    """Retention: drop whole date partitions older than --keep-days, atomically for readers
    (files not written by marketbus are reported and kept)."""
    from archive.compact import prune
    from marketbus_cli import _fail

    _logs(log_level, log_json)
    try:
        root = _maintained_dir(ctx, dir, config)
        days = keep_days
        if days is None:
            days = _settings(_inherited(ctx, "config", config), None, None).archive.keep_days
        if days is None:
            raise ConfigError("--keep-days (or keep_days under [archive]) is required")
        report = prune(root, days, grace_s=parse_duration("--grace", grace))
    except MarketbusError as e:
        raise _fail(e) from None
    except OSError as e:
        raise _fail(ConfigError(f"{e}")) from None
    _print_reports([("pruned", report)], json)


@archive_app.command("status")
def status_cmd(
    ctx: typer.Context,
    config: _Config = None,
    redis_url: _RedisUrl = None,
    redis_password_file: _PasswordFile = None,
    name: Annotated[
        str | None, typer.Option(help="check this archiver only (its consumer name)")
    ] = None,
    max_age: Annotated[
        float, typer.Option(min=0.0, help="oldest acceptable status, seconds")
    ] = 30.0,
    json: Annotated[bool, typer.Option("--json", help="the statuses as JSON")] = False,
) -> None:
    """The archivers' status from Redis (mb:status:archive:*). Exit 0 when each (or --name)
    is archiving, its status fresh and its lag under half of MAXLEN; 1 otherwise."""
    import orjson

    from archive.status import health
    from marketbus_cli import _fail, _run

    try:
        settings = _settings(
            _inherited(ctx, "config", config),
            _inherited(ctx, "redis_url", redis_url),
            _inherited(ctx, "redis_password_file", redis_password_file),
        )
    except MarketbusError as e:
        raise _fail(e) from None
    statuses = _run(_read_statuses(settings.redis))
    if name is not None:
        statuses = [s for s in statuses if s.get("name") == name]
    now_ms = int(time.time() * 1000)
    verdicts = [health(s, now_ms, max_age) for s in statuses]
    if json:
        pairs = zip(statuses, verdicts, strict=True)
        out = [{**s, "healthy": ok, "why": why} for s, (ok, why) in pairs]
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_statuses(statuses, verdicts, now_ms)
    if not statuses:
        typer.secho(
            f"no archiver{' named ' + repr(name) if name else ''} has reported status",
            fg=typer.colors.RED, err=True,
        )  # fmt: skip
        raise typer.Exit(1)
    if not all(ok for ok, _ in verdicts):
        raise typer.Exit(1)


async def _read_statuses(redis_settings: Any) -> list[dict[str, Any]]:
    from archive.status import STATUS_PATTERN, parse_status
    from marketbus.redis_client import connect

    redis = connect(redis_settings)
    out = []
    try:
        async for key in redis.scan_iter(match=STATUS_PATTERN, count=100, _type="hash"):
            status = parse_status(await redis.hgetall(key))
            if status is not None:
                out.append(status)
    finally:
        await redis.aclose()
    return sorted(out, key=lambda s: str(s["name"]))


def _print_statuses(
    statuses: list[dict[str, Any]], verdicts: list[tuple[bool, str]], now_ms: int
) -> None:
    """A table, then each problem on a line of its own (never cut by the terminal's width)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="archivers", title_justify="left")
    for col in ("name", "state", "age", "lag", "busiest stream", "rows", "files", "errors",
                "dir"):  # fmt: skip
        table.add_column(col, overflow="fold")
    for s, (ok, _) in zip(statuses, verdicts, strict=True):
        ratio = s.get("lag_ratio")
        table.add_row(
            str(s.get("name")), str(s.get("state")),
            f"{(now_ms - int(s.get('updated_ms') or 0)) / 1000:.0f}s", str(s.get("lag")),
            f"{s.get('lag_max')}" + (f" ({ratio:.0%} of MAXLEN)" if ratio is not None else ""),
            f"{s.get('rows', 0):,}", str(s.get("files", 0)),
            str(int(s.get("write_errors", 0)) + int(s.get("redis_errors", 0))),
            str(s.get("dir")), style=None if ok else "red",
        )  # fmt: skip
    Console().print(table)
    for ok, why in verdicts:
        if not ok:
            typer.secho(why, fg=typer.colors.RED)


def _print_reports(reports: list[tuple[str, Any]], as_json: bool) -> None:
    import orjson

    if as_json:
        data = {what: vars(r) for what, r in reports}
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
        return
    for what, r in reports:
        typer.echo(
            f"{what}: {r.partitions} partitions, {r.files_in} files -> {r.files_out}, "
            f"{r.rows:,} rows, {r.bytes_in:,} -> {r.bytes_out:,} bytes; "
            f"{r.deleted} files deleted" + (f"; {r.raced} left for the next run" if r.raced else "")
        )
        for path, why in sorted(r.skipped.items()):
            typer.secho(f"skipped {path}: {why}", fg=typer.colors.YELLOW, err=True)


def _logs(level: str, as_json: bool | None) -> None:
    from marketbus import logs
    from marketbus_cli import _fail

    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise _fail(ConfigError(f"--log-level: unknown level {level!r}"))
    logs.configure(level, as_json)


def _settings(config: Path | None, redis_url: str | None, password_file: Path | None) -> Any:
    """defaults < TOML < env < flags, as ``publish`` does (``[redis]`` and ``[archive]``)."""
    from marketbus.settings import load_settings
    from marketbus_cli import _redis_overrides

    base = load_settings(config)
    over = _redis_overrides(redis_url, password_file)
    if not over:
        return base
    return load_settings(config, redis={**base.redis.model_dump(exclude={"password"}), **over})


def _inherited(ctx: typer.Context, key: str, value: Any) -> Any:
    """A subcommand's option, or the same given before it (``archive --dir X compact``)."""
    if value is not None or ctx.parent is None:
        return value
    return ctx.parent.params.get(key)


def _maintained_dir(ctx: typer.Context, dir: str | None, config: Path | None) -> Path:
    dir = _inherited(ctx, "dir", dir)
    config = _inherited(ctx, "config", config)
    if dir is None:
        dir = _settings(config, None, None).archive.dir
    root = _local_dir(dir)
    if not root.is_dir():
        raise ConfigError(f"--dir: no archive directory at {root}")
    return root


def _local_dir(value: str | None) -> Path:
    if not value:
        raise ConfigError("--dir (or dir under [archive]) is required")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
        raise ConfigError(
            f"--dir: {value!r}: only local directories are supported (s3:// and other "
            "filesystems are not wired: the commits rely on rename, fsync and flock; "
            "docs/history.md)"
        )
    return Path(value)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(option: str, text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h``, ``1d``, ``1.5h`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if m is None:
        raise ConfigError(f"{option}: {text!r} is not a duration (90s, 10m, 1h, 1d)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


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
