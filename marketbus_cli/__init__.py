"""The ``marketbus`` command: publish, tail, inspect, subscribe, doctor, fake-exchange, demo.

A package of its own on top: it drives the publisher, the consumers and the fake exchange, which
all import the wire contract (``marketbus``) below them; the contract imports none of them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import redis.exceptions
import typer

from fake_exchange import registry as _fakes
from marketbus.acl import Role
from marketbus.errors import ConfigError, FatalError, MarketbusError, RedisUnavailableError
from marketbus.models import Channel

T = TypeVar("T")

app = typer.Typer(
    name="marketbus",
    help="Real-time crypto market data: exchange -> Redis Streams -> your bots.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help="redis:// or rediss:// URL (no password here: use MARKETBUS_REDIS__PASSWORD "
        "or --redis-password-file). Default: $REDIS_URL, then the config.",
    ),
]
PasswordFile = Annotated[
    Path | None, typer.Option("--redis-password-file", help="file holding the Redis password")
]


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _channels(value: str) -> list[Channel]:
    out = []
    for c in _csv(value) or []:
        try:
            out.append(Channel(c.lower()))
        except ValueError:
            known = ", ".join(ch.value for ch in Channel)
            raise ConfigError(f"--channels: unknown channel {c!r} (use {known})") from None
    if not out:
        raise ConfigError("--channels: needs at least one channel")
    return out


def exit_code(e: BaseException) -> int:
    """2 for a bad configuration or usage, 1 for anything that went wrong at run time."""
    return 2 if isinstance(e, ConfigError) else 1


def _fail(e: BaseException, code: int | None = None) -> typer.Exit:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    return typer.Exit(exit_code(e) if code is None else code)


def _warn_password_in_url(url: str) -> None:
    if urlsplit(url).password:
        typer.secho(
            "warning: the Redis URL holds a password, which other users can read in the "
            "process list: use MARKETBUS_REDIS__PASSWORD or --redis-password-file instead",
            fg=typer.colors.YELLOW,
            err=True,
        )


def _redis_overrides(redis_url: str | None, password_file: Path | None) -> dict[str, Any] | None:
    url = redis_url or os.environ.get("REDIS_URL")
    out: dict[str, Any] = {}
    if redis_url:
        _warn_password_in_url(redis_url)
    if url:
        out["url"] = url
    if password_file:
        out["password_file"] = password_file
    return out or None


def _redis_settings(redis_url: str | None, password_file: Path | None) -> Any:
    from marketbus.settings import load_settings

    over = _redis_overrides(redis_url, password_file)
    return load_settings(None, **({"redis": over} if over else {})).redis


def _run(coro: Coroutine[Any, Any, T], loop: str = "asyncio") -> T:
    """Run ``coro`` on the ``loop`` asked for (auto, asyncio, uvloop); our errors (and
    redis-py's, translated) become one red line and an exit code."""
    from marketbus.aio import loop_factory
    from marketbus.redis_client import from_redis

    try:
        with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
            return runner.run(coro)
    except MarketbusError as e:
        raise _fail(e) from None
    except BrokenPipeError:  # `marketbus tail --json | head`: the reader left, so do we
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    except (redis.exceptions.RedisError, OSError) as e:
        err = from_redis(e)
        if isinstance(err, RedisUnavailableError):
            err = RedisUnavailableError(f"Redis is not reachable: {err}")
        raise _fail(err) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


ExchangeOpt = Annotated[str | None, typer.Option(help="exchange id, e.g. binance")]
SymbolsOpt = Annotated[str | None, typer.Option(help="comma-separated: BTC/USDT,ETHUSDT")]
ChannelsOpt = Annotated[
    str | None, typer.Option(help="comma-separated: ticker,trades,book,candles")
]
ExchangeUrlOpt = Annotated[
    str | None, typer.Option(help="point CCXT's URLs at this host (a fake exchange)")
]
ParserOpt = Annotated[
    str | None,
    typer.Option(
        help="auto (default: native where marketbus has a parser: binance, okx), ccxt, or native: "
        "parse trade/ticker frames ourselves"
    ),
]
ModeOpt = Annotated[
    str | None, typer.Option(help="ws (default) or poll: REST polling instead of websockets")
]
BookDepthOpt = Annotated[
    int | None, typer.Option(min=1, help="levels per side on channel book (default 20)")
]
SandboxOpt = Annotated[
    bool,
    typer.Option(
        "--sandbox",
        help="the exchange's public testnet (CCXT's sandbox mode: binance, binanceusdm, bybit, "
        "okx); its streams are named <exchange>-testnet, apart from live data",
    ),
]
InstanceOpt = Annotated[
    str | None,
    typer.Option(help="this process's name when several split one exchange's markets"),
]
ConfigOpt = Annotated[Path | None, typer.Option(help="TOML config file")]


def publisher_settings(
    config: Path | None,
    redis_url: str | None,
    redis_password_file: Path | None,
    *,
    exchange: str | None = None,
    symbols: str | None = None,
    channels: str | None = None,
    exchange_url: str | None = None,
    parser: str | None = None,
    mode: str | None = None,
    book_depth: int | None = None,
    metrics_port: int | None = None,
    instance: str | None = None,
    sandbox: bool | None = None,
) -> Any:
    """The publisher's settings: defaults < TOML file < ``MARKETBUS_*`` env < these flags.

    Shared by ``publish`` and ``doctor``, so the pre-flight checks exactly what would run.
    The exchange flags apply to the first configured exchange. Raises :class:`ConfigError`.
    """
    from marketbus.settings import load_settings

    base = load_settings(config)
    overrides: dict[str, Any] = {}
    flags = (exchange, symbols, channels, exchange_url, parser, mode, book_depth, sandbox)
    if any(v is not None for v in flags):
        first = base.exchanges[0].model_dump()
        if exchange is not None:
            first["name"] = exchange
        if symbols is not None:
            first["symbols"] = _csv(symbols)
        if channels is not None:
            first["channels"] = _csv(channels)
        if exchange_url is not None:
            first["url"] = exchange_url
        if parser is not None:
            first["parser"] = parser
        if mode is not None:
            first["mode"] = mode
        if book_depth is not None:
            first["book_depth"] = book_depth
        if sandbox is not None:
            first["sandbox"] = sandbox
        overrides["exchanges"] = [first]
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    if instance is not None:
        overrides["instance"] = instance
    redis_over = _redis_overrides(redis_url, redis_password_file)
    if redis_over:
        overrides["redis"] = {**base.redis.model_dump(exclude={"password"}), **redis_over}
    return load_settings(config, **overrides)


@app.command()
def publish(
    exchange: ExchangeOpt = None,
    symbols: SymbolsOpt = None,
    channels: ChannelsOpt = None,
    redis_url: RedisUrl = None,
    redis_password_file: PasswordFile = None,
    exchange_url: ExchangeUrlOpt = None,
    parser: ParserOpt = None,
    mode: ModeOpt = None,
    book_depth: BookDepthOpt = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve /healthz, /readyz and /metrics on this port")
    ] = None,
    instance: InstanceOpt = None,
    sandbox: SandboxOpt = False,
    config: ConfigOpt = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    log_json: Annotated[
        bool | None,
        typer.Option("--log-json/--log-pretty", help="default: JSON unless stderr is a terminal"),
    ] = None,
) -> None:
    """Run the publisher: exchange websockets -> normalized records -> Redis Streams."""
    from marketbus import logs

    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise _fail(ConfigError(f"--log-level: unknown level {log_level!r}"))
    logs.configure(log_level, log_json)
    try:
        settings = publisher_settings(
            config, redis_url, redis_password_file, exchange=exchange, symbols=symbols,
            channels=channels, exchange_url=exchange_url, parser=parser, mode=mode,
            book_depth=book_depth, metrics_port=metrics_port, instance=instance,
            sandbox=True if sandbox else None,
        )  # fmt: skip
    except MarketbusError as e:
        raise _fail(e) from None
    _run(_publish(settings), settings.loop)


async def _publish(settings: Any) -> None:
    from publisher.app import Publisher

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Publisher(settings) as p:
        waiter = asyncio.create_task(p.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        p.sink.check()
        if not stop.is_set():
            failed = {n: w.status().get("last_error") for n, w in p.workers.items()}
            reasons = "; ".join(f"{n}: {why or 'failed'}" for n, why in failed.items())
            raise FatalError(f"every exchange worker failed ({reasons})")


@app.command()
def tail(
    markets: Annotated[
        list[str] | None, typer.Argument(help="binance:BTC/USDT ... (default: every stream)")
    ] = None,
    channels: Annotated[str, typer.Option(help="comma-separated")] = "ticker,trades",
    redis_url: RedisUrl = None,
    redis_password_file: PasswordFile = None,
    json: Annotated[bool, typer.Option("--json", help="one JSON line per record")] = False,
    count: Annotated[int | None, typer.Option(min=1, help="stop after N records")] = None,
    backfill: Annotated[int, typer.Option(min=0, help="entries to load first per stream")] = 100,
) -> None:
    """Live view of the latest prices (or --json lines), read through the consumer library."""
    from marketbus import logs
    from marketbus_cli.tail import tail as run_tail

    logs.configure("warning")  # on stderr: stdout is the view or the JSON lines
    try:
        redis = _redis_settings(redis_url, redis_password_file)
        chans = _channels(channels)
    except MarketbusError as e:
        raise _fail(e) from None
    _run(run_tail(redis, list(markets or []), chans, as_json=json, count=count, backfill=backfill))


@app.command()
def inspect(
    redis_url: RedisUrl = None,
    redis_password_file: PasswordFile = None,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The streams in Redis (length, first and last entry decoded) and publisher status."""
    import orjson

    from marketbus_cli.inspect import inspect as run_inspect
    from marketbus_cli.inspect import print_inspection

    try:
        redis = _redis_settings(redis_url, redis_password_file)
    except MarketbusError as e:
        raise _fail(e) from None
    data = _run(run_inspect(redis))
    if json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_inspection(data)


@app.command()
def health(
    exchange: Annotated[
        str, typer.Option(help="the worker to check: binance, or binance@<instance>")
    ] = "binance",
    redis_url: RedisUrl = None,
    redis_password_file: PasswordFile = None,
    max_age: Annotated[
        float, typer.Option(min=0.0, help="oldest acceptable last frame, seconds")
    ] = 60.0,
) -> None:
    """Exit 0 when the exchange's worker is CONNECTED with a recent frame, else 1."""
    from marketbus_cli.inspect import worker_health

    try:
        redis = _redis_settings(redis_url, redis_password_file)
    except MarketbusError as e:
        raise _fail(e) from None
    try:
        ok, why = _run(worker_health(redis, exchange.strip().lower(), max_age))
    except typer.Exit as e:
        raise typer.Exit(1) from e  # unreachable Redis, bad password: unhealthy all the same
    typer.echo(why)
    raise typer.Exit(0 if ok else 1)


def _exchange_id(name: str) -> str:
    """``binance``, or ``binance@eu`` for the publisher started with ``instance = "eu"``
    (``binance-testnet``: the one started with ``sandbox = true``)."""
    import re

    import ccxt

    from marketbus.keys import split_testnet

    ex, at, instance = name.strip().lower().partition("@")
    if split_testnet(ex)[0] not in ccxt.exchanges:
        raise _fail(ConfigError(f"unknown exchange {name!r}: ccxt has no such id"))
    if at and not re.fullmatch(r"[a-z0-9_.-]{1,64}", instance):
        raise _fail(ConfigError(f"bad instance name in {name!r}: use letters, digits, _ . -"))
    return f"{ex}@{instance}" if at else ex


def _change(
    op: str, exchange: str, symbols: list[str], channels: str | None, redis_url: str | None,
    password_file: Path | None, wait: float, default_all: bool,
) -> None:  # fmt: skip
    from marketbus_cli.subs import change_and_wait

    ex = _exchange_id(exchange)
    try:
        redis_settings = _redis_settings(redis_url, password_file)
        if channels is None:
            chans = list(Channel) if default_all else [Channel.TICKER, Channel.TRADES]
        else:
            chans = _channels(channels)
    except MarketbusError as e:
        raise _fail(e) from None

    async def go() -> Any:
        from marketbus.redis_client import connect

        client = connect(redis_settings)
        try:
            return await change_and_wait(client, ex, symbols, chans, op, wait)  # type: ignore[arg-type]
        finally:
            await client.aclose()

    result = _run(go())
    verb = "subscribe" if op == "+" else "unsubscribe"
    names = ",".join(c.value for c in chans)
    typer.echo(f"{ex}: {verb} {' '.join(symbols)} ({names}): stored in Redis")
    if not result.publisher_seen:
        typer.echo(f"no {ex} publisher has reported status: it applies this when it starts")
        return
    bad = False
    for sym, what in result.applied.items():
        if what == "pending":
            what = f"not applied within {wait:g} s (is the {ex} publisher running?)"
            bad = True
        elif what.startswith("unknown"):
            bad = True
        typer.echo(f"  {sym}: {what}")
    raise typer.Exit(1 if bad else 0)


Symbols = Annotated[list[str], typer.Argument(help="markets: BTC/USDT ETHUSDT sol-usdt ...")]
Wait = Annotated[float, typer.Option(min=0.0, help="seconds to wait for the publisher to apply it")]


@app.command()
def subscribe(
    exchange: Annotated[str, typer.Argument(help="exchange id, e.g. binance (or binance@eu)")],
    symbols: Symbols,
    channels: Annotated[
        str | None, typer.Option(help="comma-separated (default ticker,trades): book,candles...")
    ] = None,
    redis_url: RedisUrl = None,
    redis_password_file: PasswordFile = None,
    wait: Wait = 5.0,
) -> None:
    """Add markets to a running publisher (kept in Redis: survives its restart)."""
    _change("+", exchange, symbols, channels, redis_url, redis_password_file, wait, False)


@app.command()
def unsubscribe(
    exchange: Annotated[str, typer.Argument(help="exchange id, e.g. binance (or binance@eu)")],
    symbols: Symbols,
    channels: Annotated[str | None, typer.Option(help="comma-separated (default: all)")] = None,
    redis_url: RedisUrl = None,
    redis_password_file: PasswordFile = None,
    wait: Wait = 5.0,
) -> None:
    """Remove markets from a running publisher (kept in Redis: survives its restart)."""
    _change("-", exchange, symbols, channels, redis_url, redis_password_file, wait, True)


@app.command()
def subscriptions(
    exchange: Annotated[str, typer.Argument(help="exchange id, e.g. binance (or binance@eu)")],
    reset: Annotated[
        bool, typer.Option("--reset", help="drop every run-time change: back to the config")
    ] = False,
    redis_url: RedisUrl = None,
    redis_password_file: PasswordFile = None,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run-time subscription changes stored for an exchange, and what its worker publishes."""
    import orjson

    from marketbus_cli import subs

    ex = _exchange_id(exchange)
    try:
        redis_settings = _redis_settings(redis_url, redis_password_file)
    except MarketbusError as e:
        raise _fail(e) from None

    async def go() -> dict[str, Any]:
        from marketbus.redis_client import connect, from_redis

        client = connect(redis_settings)
        try:
            if reset:
                try:
                    await subs.reset(client, ex)
                except Exception as e:
                    raise from_redis(e) from e
            return await subs.listing(client, ex)
        finally:
            await client.aclose()

    data = _run(go())
    if json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if reset:
        typer.echo(f"{ex}: run-time changes dropped; the configuration applies")
    typer.echo(f"{ex}: worker {data['state'] or 'not reporting'}")
    for ch, syms in sorted((data["active"] or {}).items()):
        typer.echo(f"  {ch}: {', '.join(syms)}")
    for sym, why in (data["dropped"] or {}).items():
        typer.echo(f"  dropped {sym}: {why}")
    if data["changes"]:
        typer.echo("run-time changes (oldest first):")
        for c in data["changes"]:
            sign = "subscribe" if c["op"] == "+" else "unsubscribe"
            typer.echo(f"  {sign} {c['symbol']} {c['channel']}")


@app.command("doctor")
def doctor_command(
    role: Annotated[
        Role, typer.Option(help="what the Redis user must be allowed: publisher, consumer, archive")
    ] = Role.PUBLISHER,
    json: Annotated[bool, typer.Option("--json", help="the checks as JSON on stdout")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 on warnings too")] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="seconds for Redis and for each exchange to answer")
    ] = 10.0,
    config: ConfigOpt = None,
    redis_url: RedisUrl = None,
    redis_password_file: PasswordFile = None,
    exchange: ExchangeOpt = None,
    symbols: SymbolsOpt = None,
    channels: ChannelsOpt = None,
    exchange_url: ExchangeUrlOpt = None,
    parser: ParserOpt = None,
    mode: ModeOpt = None,
    book_depth: BookDepthOpt = None,
    instance: InstanceOpt = None,
) -> None:
    """Check the configuration, Redis (reachable, version, ACL, persistence, memory) and the
    exchanges' symbols. Exit 0 all good, 2 on an error, 1 on warnings with --strict."""
    from rich.console import Console

    from marketbus import logs
    from marketbus_cli import doctor as doc

    logs.configure("warning")  # on stderr: stdout is the table or the JSON
    settings, error = None, None
    try:
        settings = publisher_settings(
            config, redis_url, redis_password_file, exchange=exchange, symbols=symbols,
            channels=channels, exchange_url=exchange_url, parser=parser, mode=mode,
            book_depth=book_depth, instance=instance,
        )  # fmt: skip
    except MarketbusError as e:
        error = str(e)
    try:
        checks = doc.run(settings, error, config, role, timeout)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if json:
        sys.stdout.write(doc.as_json(checks, role, strict))
    else:
        doc.render(checks, role, strict, Console())
    raise typer.Exit(doc.exit_code(checks, strict))


@app.command(
    "fake-exchange",
    help=f"A local fake exchange, first stdout line its URL: {_fakes.labels()}.",
)
def fake_exchange(
    exchange: Annotated[
        str, typer.Option(help=f"protocol to speak: {', '.join(_fakes.FAKES)}")
    ] = "binance",
    recording: Annotated[
        Path | None, typer.Option(help="JSONL recording to replay (default: the bundled one)")
    ] = None,
    speed: Annotated[
        float, typer.Option(min=0.0, help="replay speed-up; 0 = as fast as possible")
    ] = 1.0,
    loop: Annotated[bool, typer.Option("--loop/--no-loop", help="replay forever")] = False,
    synthetic: Annotated[
        int | None, typer.Option(min=1, help="generate random-walk data for N symbols instead")
    ] = None,
    rate: Annotated[float, typer.Option(help="synthetic frames per second, in total")] = 1000.0,
    hold_until_subscribed: Annotated[
        bool,
        typer.Option(
            "--hold-until-subscribed",
            help=f"start the replay (or synthetic data) {_fakes.HOLD_S:g} s after the first "
            "websocket subscription, so a client started later misses nothing",
        ),
    ] = False,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 0,
) -> None:
    """A fake exchange process; its help text is built from `fake_exchange.registry`."""
    from fake_exchange.cli import EXCHANGES, run

    if exchange not in EXCHANGES:
        raise _fail(ConfigError(f"--exchange: one of {', '.join(EXCHANGES)}, not {exchange!r}"))
    if rate <= 0:
        raise _fail(ConfigError(f"--rate: must be > 0 (got {rate:g})"))
    if recording is not None and not recording.is_file():
        raise _fail(ConfigError(f"--recording: no such file: {recording}"))
    hold = _fakes.HOLD_S if hold_until_subscribed else None
    try:
        run(recording, speed, loop, synthetic, rate, host, port, exchange, hold)
    except (ValueError, OSError) as e:  # a recording we cannot replay, a port in use
        raise _fail(e, 2 if isinstance(e, ValueError) else 1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def demo(
    redis_url: RedisUrl = None,
    redis_password_file: PasswordFile = None,
    offline: Annotated[bool, typer.Option(help="skip the live check, replay at once")] = False,
    speed: Annotated[float, typer.Option(min=0.0, help="replay speed when offline")] = 1.0,
) -> None:
    """Redis + publisher + live view in one process (what `make run` starts).

    Without --redis-url or $REDIS_URL it starts its own redis-server and stops it on exit.
    """
    from marketbus_cli.demo import demo as run_demo

    redis = None
    if redis_url or os.environ.get("REDIS_URL") or redis_password_file:
        try:
            redis = _redis_settings(redis_url, redis_password_file)
        except MarketbusError as e:
            raise _fail(e) from None
    _run(run_demo(redis, offline=offline, speed=speed))


from marketbus_cli.history_cmds import register as _register_history  # noqa: E402
from marketbus_cli.replay_cmd import register as _register_replay  # noqa: E402

_register_history(app)
_register_replay(app)
from marketbus_cli.backfill_cmd import register as _register_backfill  # noqa: E402

_register_backfill(app)

__all__ = ["app"]
