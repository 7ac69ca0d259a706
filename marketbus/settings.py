"""Typed, frozen configuration: defaults < TOML file < ``MARKETBUS_*`` env < CLI flags.

A bad value is rejected at start with a :class:`ConfigError` naming the field and
the value. Secrets (Redis password) come from env or a file, never from argv, and
print as ``**********``.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from marketbus.errors import ConfigError
from marketbus.keys import TESTNET_SUFFIX, sandbox_name, split_testnet
from marketbus.models import INTERVALS_MS, MAX_BOOK_LEVELS, Channel
from marketbus.redaction import redact_url as redact_url  # re-exported: callers import it here
from marketbus.redaction import register_secret, url_secrets

DEFAULT_SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RedisSettings(_Frozen):
    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr | None = None
    password_file: Path | None = None
    username: str | None = None
    maxlen: int = Field(100_000, ge=1, description="approximate MAXLEN per stream")
    batch_size: int = Field(512, ge=1, le=100_000, description="records per pipelined write")
    spool_size: int = Field(200_000, ge=0, description="records held while Redis is away")
    pause_reading_at: int = Field(
        10_000,
        ge=1,
        description="records waiting while Redis is up at which the exchange sockets are not "
        "read until half of them are written (backpressure: a slow writer never drops)",
    )
    linger_ms: float = Field(
        0.0,
        ge=0,
        le=100,
        description="after the first record of a quiet spell, wait this long for more before "
        "writing (fewer, larger XADD pipelines: less CPU in the publisher and Redis at steady "
        "rates, up to this much more latency)",
    )
    cluster: bool = False
    tls_ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    def resolved_password(self) -> str | None:
        """The password from ``password`` or ``password_file`` (file wins when both are set).

        Whatever it is (and any password written in the URL) is registered with
        :mod:`marketbus.redaction`, so no log line or status field of this process shows it.
        """
        for secret in url_secrets(self.url):
            register_secret(secret)
        password: str | None
        if self.password_file is not None:
            try:
                password = self.password_file.read_text().strip()
            except OSError as e:
                raise ConfigError(
                    f"redis.password_file: cannot read {self.password_file}: {e}"
                ) from e
        else:
            password = self.password.get_secret_value() if self.password else None
        register_secret(password)
        return password


NATIVE_PARSERS = frozenset({"binance", "okx", "bybit"})
"""Exchanges with a native trade/ticker parser whose equivalence tests cover every frame kind
the publisher subscribes to (tests/unit/test_native_parser.py, tests/unit/test_native_okx.py,
tests/unit/test_native_bybit.py);
the exchanges' profiles name the parsers (``publisher.exchanges.FAST_PATHS``; settings may not
import the publisher, so a test keeps the two lists equal)."""


SANDBOX_TESTED = ("binance", "binanceusdm", "bybit", "okx")
"""Exchanges whose sandbox mode is tested here (against the fake exchange: the testnets
themselves are not reachable from the tests). CCXT 4.5.90 has test urls for 44 more. The same
as the profiles' ``sandbox_tested`` (``publisher.exchanges``; a test keeps them equal)."""


def _sandbox_in_options(options: dict[str, Any]) -> bool:
    """Whether the extra CCXT config turns CCXT's sandbox on by itself (its constructor reads
    ``sandbox``/``testnet`` from the config and from its options)."""
    inner = options.get("options")
    places = [options, inner] if isinstance(inner, dict) else [options]
    return any(bool(p.get(k)) for p in places for k in ("sandbox", "testnet"))


@functools.cache
def sandbox_refusal(exchange_id: str, mode: str = "ws") -> str | None:
    """Why ``exchange_id`` cannot run in sandbox mode, or None when it can.

    CCXT's ``set_sandbox_mode`` swaps ``urls['api']`` for ``urls['test']``; an adapter with
    no test urls has none to swap to (CCXT 4.5.90 even installs ``None`` for coinbase and
    kraken, whose ``test`` is declared empty), and one whose test urls hold no websocket
    url while its live ones do can only be polled there.
    """
    import ccxt
    import ccxt.pro

    pro = getattr(ccxt.pro, exchange_id, None)
    urls = (pro or getattr(ccxt, exchange_id))().urls
    test = urls.get("test")
    tested = ", ".join(SANDBOX_TESTED)
    if not test:
        return (
            f"{exchange_id} has no public testnet in ccxt {ccxt.__version__} (its urls['test'] "
            f"is empty): sandbox = true works for {tested} (and other exchanges CCXT has test "
            "urls for)"
        )
    live = urls.get("api")
    no_ws = (
        isinstance(live, dict) and "ws" in live and not (isinstance(test, dict) and "ws" in test)
    )
    if pro is not None and no_ws and mode == "ws":
        return (
            f"{exchange_id}'s testnet in ccxt {ccxt.__version__} has REST urls only, no "
            "websocket url: use mode = 'poll' with sandbox = true"
        )
    return None


class ExchangeSettings(_Frozen):
    name: str = "binance"
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    channels: tuple[Channel, ...] = (Channel.TICKER, Channel.TRADES)
    url: str | None = Field(
        None, description="base URL of a fake exchange; CCXT's REST and websocket URLs point there"
    )
    ticker_stream: Literal["ticker", "miniTicker"] = "ticker"
    trade_stream: Literal["aggTrade", "trade"] = "aggTrade"
    trades_limit: int | None = Field(
        None,
        ge=1,
        description="CCXT tradesLimit (trades cached between two reads); auto: 10 where the "
        "publisher taps the adapter, else 100,000",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="extra CCXT config")
    parser: Literal["auto", "ccxt", "native"] = Field(
        "auto",
        description="native: parse trade/ticker frames ourselves (CCXT still does the rest); "
        "auto: native where marketbus has a native parser (binance, okx), else ccxt",
    )
    guard_frames: bool = Field(
        True, description="skip frames CCXT cannot decode instead of letting them wedge the socket"
    )
    book_depth: int = Field(20, ge=1, le=MAX_BOOK_LEVELS, description="levels per side published")
    book_interval_ms: int = Field(
        0, ge=0, le=60_000, description="at most one book record per market per interval; 0: all"
    )
    candle_intervals: tuple[str, ...] = Field(
        ("1m",), description="exchange klines published on channel candles"
    )
    mode: Literal["ws", "poll"] = Field(
        "ws", description="poll: REST fetch_tickers/fetch_trades instead of websockets"
    )
    poll_interval_s: float | None = Field(
        None, gt=0, le=3_600, description="seconds between polls; auto from the rate limit"
    )
    sandbox: bool = Field(
        False,
        description="the exchange's public testnet, through CCXT's sandbox mode; streams, "
        "records, status and metrics name the exchange <name>-testnet (bus_name)",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        import ccxt

        name = v.strip().lower()
        if name not in ccxt.exchanges:
            base, testnet = split_testnet(name)
            known = testnet and base in ccxt.exchanges
            hint = f" (a testnet is name = {base!r}, sandbox = true)" if known else ""
            raise ValueError(f"unknown exchange {v!r}: ccxt supports {len(ccxt.exchanges)}{hint}")
        return name  # without websocket support in ccxt.pro it is polled over REST

    @property
    def bus_name(self) -> str:
        """The exchange's name on the bus: the records' ``exchange``, the stream keys
        (``md:{binance-testnet:BTC/USDT}:trades``), the status key, metrics labels. ``name``
        stays CCXT's id (the adapter and every per-exchange table are looked up by it)."""
        return sandbox_name(self.name) if self.sandbox else self.name

    @model_validator(mode="after")
    def _testnet_exists(self) -> ExchangeSettings:
        if _sandbox_in_options(self.options):
            raise ValueError(
                "options: CCXT's sandbox/testnet switch would publish testnet data under the "
                f"live name {self.name!r}: use sandbox = true (streams named {self.name}"
                f"{TESTNET_SUFFIX})"
            )
        if self.sandbox:
            why = sandbox_refusal(self.name, self.mode)
            if why is not None:
                raise ValueError(why)
        return self

    @model_validator(mode="after")
    def _native_supported(self) -> ExchangeSettings:
        if self.parser == "native" and self.name not in NATIVE_PARSERS:
            raise ValueError(
                f"parser 'native' exists for {', '.join(sorted(NATIVE_PARSERS))} only, "
                f"not {self.name!r}"
            )
        return self

    @property
    def native(self) -> bool:
        """Whether frames go through our native parser (``auto`` picks it where it exists)."""
        return self.parser == "native" or (self.parser == "auto" and self.name in NATIVE_PARSERS)

    @field_validator("candle_intervals")
    @classmethod
    def _intervals(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [i for i in v if i not in INTERVALS_MS]
        if bad:
            raise ValueError(f"unknown interval(s) {bad}: use {', '.join(INTERVALS_MS)}")
        if not v:
            raise ValueError("needs at least one interval")
        return tuple(dict.fromkeys(v))

    @field_validator("symbols")
    @classmethod
    def _some(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(s.strip() for s in v if s.strip())
        if not cleaned:
            raise ValueError("needs at least one symbol")
        return cleaned

    @field_validator("channels")
    @classmethod
    def _some_channels(cls, v: tuple[Channel, ...]) -> tuple[Channel, ...]:
        if not v:
            raise ValueError("needs at least one channel")
        return tuple(dict.fromkeys(v))


class SupervisorSettings(_Frozen):
    backoff_min_s: float = Field(5.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)
    heartbeat_s: float = Field(30.0, gt=0, description="no frame for this long: reconnect")
    healthy_after_s: float = Field(60.0, ge=0, description="connected this long resets backoff")
    status_interval_s: float = Field(1.0, gt=0)
    gc_freeze: bool = Field(
        True,
        description="keep each connected adapter out of Python's full GC passes (gc.freeze; "
        "process-wide: turn off when the publisher shares its process with other work)",
    )


class ArchiveSettings(_Frozen):
    """``[archive]``: ``marketbus archive`` (docs/history.md). The fields after ``compact``
    are :class:`archive.ArchiveConfig`'s, by the same names; one left out takes the
    archiver's default. (Defined here, not there: this package sits below ``archive``.)"""

    dir: str | None = Field(None, description="the archive directory (a local path)")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve /healthz, /readyz, /metrics here"
    )
    metrics_host: str = "127.0.0.1"
    status_every_s: float = Field(
        5.0, gt=0, description="write the status hash mb:status:archive:<name> this often"
    )
    keep_days: int | None = Field(
        None, ge=1, description="retention: drop dates before today - keep_days (hourly)"
    )
    compact: bool = Field(
        False, description="merge each finished day's files into one file per partition (hourly)"
    )
    streams: str | None = None
    group: str | None = None
    name: str | None = None
    roll_bytes: int | None = None
    roll_age_s: float | None = None
    rescan_s: float | None = None
    count: int | None = None
    block_ms: int | None = None
    retry_min_s: float | None = None
    retry_max_s: float | None = None
    log_every_s: float | None = None
    stop_timeout_s: float | None = None
    row_group_rows: int | None = None
    zstd_level: int | None = None
    adopt_every_s: float | None = None
    lock_wait_s: float | None = None
    pause_gc: bool | None = None


class Settings(BaseSettings):
    """Everything a publisher needs (and, under ``archive``, the archiver)."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="MARKETBUS_",
        env_nested_delimiter="__",
    )

    redis: RedisSettings = RedisSettings()
    exchanges: tuple[ExchangeSettings, ...] = (ExchangeSettings(),)
    supervisor: SupervisorSettings = SupervisorSettings()
    archive: ArchiveSettings = ArchiveSettings()
    log_level: str = "info"
    log_json: bool | None = None
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve /healthz, /readyz, /metrics here"
    )
    metrics_host: str = "127.0.0.1"
    loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto",
        description="event loop of `marketbus publish`: auto = uvloop where installed (it is on "
        "Linux: ~20% less CPU per record at a steady rate, docs/performance.md), else asyncio",
    )
    control: bool = Field(
        True, description="apply run-time subscription changes (marketbus subscribe) from Redis"
    )

    @field_validator("loop")
    @classmethod
    def _loop_installed(cls, v: str) -> str:
        if v == "uvloop":
            try:
                import uvloop  # noqa: F401
            except ImportError:
                raise ValueError("'uvloop' is not installed here: use auto or asyncio") from None
        return v

    instance: str | None = Field(
        None,
        pattern=r"^[a-z0-9_.-]{1,64}$",
        description="name of this publisher process when several split one exchange's markets: "
        "status and control keys become <exchange>@<instance>",
    )

    @field_validator("exchanges")
    @classmethod
    def _unique(cls, v: tuple[ExchangeSettings, ...]) -> tuple[ExchangeSettings, ...]:
        if not v:
            raise ValueError("needs at least one exchange")
        names = [e.bus_name for e in v]  # binance and binance sandbox may run side by side
        if len(set(names)) != len(names):
            raise ValueError(f"exchange listed twice: {names}")
        return v


def describe_validation_error(e: ValidationError) -> str:
    """One line per problem: ``field.path: message (got value)``."""
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{loc}: {err['msg']}{shown}")
    return "; ".join(lines)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, an optional TOML file, env, then ``overrides`` (CLI flags)."""
    data: dict[str, Any] = {}
    if config is not None:
        try:
            data = tomllib.loads(Path(config).read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {config}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {config} is not valid TOML: {e}") from e

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, InitSettingsSource(settings_cls, data))

    try:
        loaded = _Loaded(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise ConfigError(f"invalid configuration: {describe_validation_error(e)}") from e
    return Settings.model_validate(loaded.model_dump())
