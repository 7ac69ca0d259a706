"""``marketbus backfill``: an exchange's REST history into the archive (docs/history.md).

The paging, resuming and writing live in :mod:`archive.backfill`, which takes any client with
CCXT's ``fetch_trades``/``fetch_ohlcv``; this module builds that client (CCXT's async one, its
URLs pointed at ``--exchange-url`` as ``marketbus publish`` does, its rate limiter on), turns
CCXT's errors into ours with the ``Retry-After`` an exchange sent, and shows a progress bar on
a terminal.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from marketbus.errors import ConfigError, MarketbusError

_Dir = Annotated[Path, typer.Option("--dir", help="the archive directory")]


def register(app: typer.Typer) -> None:
    """Add ``backfill`` to ``app``."""
    app.command("backfill")(backfill)


def backfill(
    dir: _Dir,
    symbols: Annotated[str, typer.Option(help="comma-separated: BTC/USDT,ETH/USDT")],
    since: Annotated[
        str, typer.Option(help="start (UTC): 2026-11-01, 2026-11-01T12:00Z or ms since epoch")
    ],
    until: Annotated[str, typer.Option(help="end, excluded (same forms, or now)")] = "now",
    exchange: Annotated[str, typer.Option(help="exchange id, e.g. binance, okx")] = "binance",
    channels: Annotated[str, typer.Option(help="comma-separated: trades,candles")] = "trades",
    interval: Annotated[
        str, typer.Option(help="candle intervals, comma-separated (channel candles)")
    ] = "1m",
    exchange_url: Annotated[
        str | None, typer.Option(help="point CCXT's URLs at this host (a fake exchange)")
    ] = None,
    rate_limit: Annotated[
        bool,
        typer.Option("--rate-limit/--no-rate-limit", help="CCXT's rate limiter (keep it on live)"),
    ] = True,
    commit_rows: Annotated[
        int, typer.Option(min=1, help="rows held before a commit (and a cursor update)")
    ] = 100_000,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="progress bar (default: on a terminal)"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "warning",
) -> None:
    """Fetch trades and candles of a past range over REST into the archive under --dir.

    Resumable: rerun the same command after an interruption and it goes on from its cursor
    (_archive/backfill/<exchange>.json); a trade the archive holds already is not written
    again, so a range over a gap the live path left fills it."""
    from archive.backfill import BackfillPlan, parse_time
    from marketbus import logs
    from marketbus.models import Channel
    from marketbus_cli import _channels, _csv, _fail, _run

    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise _fail(ConfigError(f"--log-level: unknown level {log_level!r}"))
    logs.configure(log_level, None)
    try:
        wanted = _channels(channels)
        bad = [c.value for c in wanted if c not in (Channel.TRADES, Channel.CANDLES)]
        if bad:
            raise ConfigError(f"--channels: trades and candles only, not {', '.join(bad)}")
        plan = BackfillPlan(
            symbols=tuple(_csv(symbols) or ()),
            channels=tuple(wanted),
            intervals=tuple(_csv(interval) or ()),
            since_ms=parse_time(since),
            until_ms=parse_time(until),
        )
        client = make_client(exchange, exchange_url, rate_limit)
    except MarketbusError as e:
        raise _fail(e) from None
    show = sys.stderr.isatty() if progress is None else progress
    code = _run(_backfill(client, dir, plan, commit_rows, show))
    raise typer.Exit(code)


def make_client(exchange: str, url: str | None, rate_limit: bool) -> Any:
    """CCXT's async REST client for ``exchange``, configured as the publisher's (spot markets,
    every URL rebased onto ``url`` when given), with its rate limiter as asked."""
    import ccxt.async_support as ccxt_async
    from pydantic import ValidationError

    from marketbus.errors import UnknownExchangeError
    from marketbus.settings import ExchangeSettings
    from publisher.ccxt_client import ccxt_config
    from publisher.endpoints import rebase_urls

    try:
        cfg = ExchangeSettings(name=exchange, url=url)
    except ValidationError as e:
        raise ConfigError(f"--exchange: {e.errors()[0]['msg']}") from None
    base = getattr(ccxt_async, cfg.name, None)
    if base is None:
        raise UnknownExchangeError(f"exchange {cfg.name!r} is not in ccxt")
    config = ccxt_config(cfg)
    config["enableRateLimit"] = rate_limit  # the publisher turns it off for a fake: not here
    client = base(config)
    if url:
        try:
            client.urls = {**client.urls, "api": rebase_urls(client.urls["api"], url)}
        except ValueError as e:
            raise ConfigError(f"--exchange-url: {e}") from None
    return client


class CcxtRest:
    """CCXT's async client as :class:`archive.backfill_pages.RestSource`: its errors become
    ours (``publisher.errors_map``), a 429/418 with the ``Retry-After`` it carried."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def fetch_trades(
        self,
        symbol: str,
        since: int | None = None,
        limit: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        try:
            got: list[dict[str, Any]] = await self.client.fetch_trades(
                symbol, since, limit, dict(params or {})
            )
        except Exception as e:
            raise self._error(e) from e
        return got

    async def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> list[list[Any]]:
        try:
            got: list[list[Any]] = await self.client.fetch_ohlcv(
                symbol, timeframe, since, limit, dict(params or {})
            )
        except Exception as e:
            raise self._error(e) from e
        return got

    async def resolve(self, symbols: tuple[str, ...]) -> tuple[str, ...]:
        """The unified symbols (``btcusdt`` -> ``BTC/USDT``); an unknown one is an error."""
        from marketbus.symbols import SymbolResolver

        try:
            markets = await self.client.load_markets()
        except Exception as e:
            raise self._error(e) from e
        resolver = SymbolResolver(self.client.id, markets.values())
        return tuple(resolver.resolve(s) for s in symbols)

    def _error(self, e: Exception) -> MarketbusError:
        from publisher.errors_map import from_ccxt

        return from_ccxt(e, getattr(self.client, "last_response_headers", None))


async def _backfill(client: Any, dir: Path, plan: Any, commit_rows: int, show: bool) -> int:
    """Run the backfill; 0 when done, 130 when stopped by SIGINT/SIGTERM (after the commit in
    flight and its cursor)."""
    import dataclasses

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from archive.backfill import Backfill

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rest = CcxtRest(client)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[rows]:>12,} rows"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not show,
    )
    bars: dict[str, Any] = {}

    def on_progress(key: str, done: int, todo: int, rows: int) -> None:
        if key not in bars:
            bars[key] = bar.add_task(key, total=max(todo, 1), rows=0)
        bar.update(bars[key], completed=min(done, todo), total=max(todo, 1), rows=rows)

    try:
        await asyncio.to_thread(dir.mkdir, parents=True, exist_ok=True)
    except OSError as e:
        await client.close()
        raise ConfigError(f"--dir: cannot create {dir}: {e}") from None
    try:
        plan = dataclasses.replace(plan, symbols=await rest.resolve(plan.symbols))
        job = Backfill(rest, dir, client.id, commit_rows=commit_rows, on_progress=on_progress)
        with bar:
            runner = asyncio.create_task(job.run(plan))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not runner.done():
                runner.cancel()
                try:
                    await runner
                except asyncio.CancelledError:
                    pass
                typer.echo("interrupted: run the same command again to go on", err=True)
                return 130
            stats = runner.result()
    finally:
        await client.close()
    for key, t in stats.tasks.items():
        typer.echo(
            f"{key}: {t.written:,} written, {t.known:,} already archived, "
            f"{t.invalid:,} invalid, {t.fetched:,} fetched"
            + (f", {t.skipped_ms} ms skipped" if t.skipped_ms else "")
        )
    if stats.retries:
        typer.echo(f"{stats.retries} requests retried ({stats.waited_s:.1f} s waited)")
    return 0
