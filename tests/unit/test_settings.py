"""Settings layering (defaults < TOML < env < CLI), errors that name the field, and secrets."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from pydantic import ValidationError

from marketbus import logs
from marketbus.errors import ConfigError, FatalError
from marketbus.models import Channel
from marketbus.settings import (
    DEFAULT_SYMBOLS,
    ExchangeSettings,
    RedisSettings,
    Settings,
    load_settings,
    redact_url,
)

SECRET = "s3cret-Pa55"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.upper().startswith("MARKETBUS_"):
            monkeypatch.delenv(k)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "marketbus.toml"
    path.write_text(text)
    return path


# -- defaults and layering ------------------------------------------------------------------


def test_defaults_are_valid() -> None:
    s = load_settings()
    assert s == Settings()
    assert s.redis.url.startswith("redis://")
    assert s.redis.resolved_password() is None
    assert [e.name for e in s.exchanges] == ["binance"]
    assert s.exchanges[0].symbols == DEFAULT_SYMBOLS
    assert set(s.exchanges[0].channels) == {Channel.TICKER, Channel.TRADES}
    assert s.supervisor.backoff_min_s <= s.supervisor.backoff_max_s


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError):
        s.log_level = "debug"  # type: ignore[misc]
    with pytest.raises(ValueError):
        s.redis.url = "redis://x"  # type: ignore[misc]


FULL_TOML = """
log_level = "warning"

[redis]
url = "redis://cache.internal:6380/2"
maxlen = 5000
batch_size = 64

[supervisor]
backoff_min_s = 1.5

[[exchanges]]
name = "binance"
symbols = ["BTC/USDT", " NKN/USDT ", ""]
channels = ["trades", "trades"]
trade_stream = "trade"

[[exchanges]]
name = "Kraken"
symbols = ["XBT/EUR"]
"""


def test_toml_file(tmp_path: Path) -> None:
    s = load_settings(_toml(tmp_path, FULL_TOML))
    assert s.log_level == "warning"
    assert s.redis.url == "redis://cache.internal:6380/2"
    assert s.redis.maxlen == 5000
    assert s.redis.batch_size == 64
    assert s.supervisor.backoff_min_s == 1.5
    assert s.supervisor.backoff_max_s == Settings().supervisor.backoff_max_s  # default kept
    binance, kraken = s.exchanges
    assert binance.name == "binance"
    assert binance.symbols == ("BTC/USDT", "NKN/USDT")  # stripped, blanks dropped
    assert binance.channels == (Channel.TRADES,)  # de-duplicated
    assert binance.trade_stream == "trade"
    assert kraken.name == "kraken"  # exchange ids are lower-cased
    assert kraken.channels == (Channel.TICKER, Channel.TRADES)


def test_env_overrides_toml_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKETBUS_REDIS__URL", "redis://from-env:6379/0")
    monkeypatch.setenv("MARKETBUS_LOG_LEVEL", "debug")
    s = load_settings(_toml(tmp_path, FULL_TOML))
    assert s.redis.url == "redis://from-env:6379/0"
    assert s.log_level == "debug"
    assert s.redis.maxlen == 5000  # from the file: env replaced one field, not the section
    assert len(s.exchanges) == 2


def test_env_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKETBUS_REDIS__MAXLEN", "777")
    monkeypatch.setenv("MARKETBUS_METRICS_PORT", "9100")
    s = load_settings()
    assert s.redis.maxlen == 777
    assert s.metrics_port == 9100


def test_cli_overrides_env_and_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKETBUS_REDIS__URL", "redis://from-env:6379/0")
    monkeypatch.setenv("MARKETBUS_LOG_LEVEL", "debug")
    s = load_settings(
        _toml(tmp_path, FULL_TOML),
        redis={"url": "redis://from-cli:6379/0"},
        log_level="error",
        metrics_port=None,  # a flag that was not given changes nothing
    )
    assert s.redis.url == "redis://from-cli:6379/0"
    assert s.log_level == "error"
    assert s.metrics_port is None
    assert s.redis.maxlen == 5000


def test_cli_exchanges_replace_the_files(tmp_path: Path) -> None:
    s = load_settings(
        _toml(tmp_path, FULL_TOML), exchanges=[{"name": "binance", "symbols": ["ETH/BTC"]}]
    )
    assert [e.name for e in s.exchanges] == ["binance"]
    assert s.exchanges[0].symbols == ("ETH/BTC",)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings(missing)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_toml(tmp_path, "[redis\nurl = 1"))


# -- errors name the field and the value ----------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "field", "value"),
    [
        ('[redis]\nurll = "redis://x"', "redis.urll", "redis://x"),
        ('[redis]\nmaxlen = "lots"', "redis.maxlen", "lots"),
        ("[redis]\nmaxlen = 0", "redis.maxlen", "0"),
        ('[redis]\nurl = "http://127.0.0.1:6379"', "redis.url", "http://127.0.0.1:6379"),
        ('[redis]\nurl = "127.0.0.1:6379"', "redis.url", "127.0.0.1:6379"),
        ('[[exchanges]]\nname = "nosuchexchange"', "exchanges.0.name", "nosuchexchange"),
        ('[[exchanges]]\nname = "binance"\nsymbols = []', "exchanges.0.symbols", "[]"),
        ('[[exchanges]]\nname = "binance"\nsymbols = [" ", ""]', "exchanges.0.symbols", "' '"),
        ('[[exchanges]]\nname = "binance"\nchannels = []', "exchanges.0.channels", "[]"),
        (
            '[[exchanges]]\nname = "binance"\nchannels = ["orders"]',
            "exchanges.0.channels.0",
            "orders",
        ),
        (
            '[[exchanges]]\nname = "binance"\nticker_stream = "book"',
            "exchanges.0.ticker_stream",
            "book",
        ),
        ('[[exchanges]]\nname = "binance"\ntrades_limit = 0', "exchanges.0.trades_limit", "0"),
        (
            '[[exchanges]]\nname = "binance"\n[[exchanges]]\nname = "BINANCE"',
            "exchanges",
            "binance",
        ),
        ("exchanges = []", "exchanges", "[]"),
        ('log_json = "sometimes"', "log_json", "sometimes"),
        ("metrics_port = 70000", "metrics_port", "70000"),
        ("[supervisor]\nheartbeat_s = -1", "supervisor.heartbeat_s", "-1"),
        ('surprise = "yes"', "surprise", "yes"),
    ],
)
def test_bad_value_is_a_config_error_naming_field_and_value(
    tmp_path: Path, toml: str, field: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_toml(tmp_path, toml))
    message = str(info.value)
    assert f"{field}:" in message
    assert value in message
    assert isinstance(info.value, FatalError)
    assert "\n" not in message  # one line for logs


def test_bad_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKETBUS_REDIS__MAXLEN", "plenty")
    with pytest.raises(ConfigError, match=r"redis\.maxlen.*plenty"):
        load_settings()


def test_bad_cli_value_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"metrics_port.*-3"):
        load_settings(metrics_port=-3)


# -- secrets --------------------------------------------------------------------------------


def test_password_file_is_read_and_stripped(tmp_path: Path) -> None:
    pw = tmp_path / "redis.pw"
    pw.write_text(f"  {SECRET}\n\n")
    assert RedisSettings(password_file=pw).resolved_password() == SECRET
    # the file wins over an inline password
    assert RedisSettings(password="other", password_file=pw).resolved_password() == SECRET


def test_password_file_from_toml(tmp_path: Path) -> None:
    pw = tmp_path / "redis.pw"
    pw.write_text(SECRET + "\n")
    s = load_settings(_toml(tmp_path, f'[redis]\npassword_file = "{pw}"'))
    assert s.redis.resolved_password() == SECRET


def test_unreadable_password_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "gone.pw"
    with pytest.raises(ConfigError, match=r"password_file.*gone\.pw"):
        RedisSettings(password_file=missing).resolved_password()


def test_password_from_env_survives_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKETBUS_REDIS__PASSWORD", SECRET)
    s = load_settings()
    assert s.redis.resolved_password() == SECRET
    for text in (repr(s), str(s), repr(s.redis), str(s.redis), s.model_dump_json()):
        assert SECRET not in text
    assert "**********" in repr(s.redis)


def test_secret_never_in_repr_or_str() -> None:
    s = Settings(redis=RedisSettings(password=SECRET))
    for text in (repr(s), str(s), repr(s.redis), f"{s}", s.model_dump_json(), repr(s.model_dump())):
        assert SECRET not in text
    assert s.redis.resolved_password() == SECRET


def test_secret_never_in_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_toml(tmp_path, f'[redis]\npassword = "{SECRET}"\nmaxlen = -1'))
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (f"redis://user:{SECRET}@host:6379/0", "redis://user:***@host:6379/0"),
        (f"redis://:{SECRET}@host:6379", "redis://:***@host:6379"),
        (
            f"rediss://default:{SECRET}@10.0.0.1:6380/1?ssl_cert_reqs=none",
            "rediss://default:***@10.0.0.1:6380/1?ssl_cert_reqs=none",
        ),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    out = redact_url(url)
    assert out == redacted
    assert SECRET not in out


def test_redact_url_with_an_at_sign_in_the_password() -> None:
    out = redact_url("redis://u:p@ss@host:1/0")
    assert "p@ss" not in out and "ss@" not in out
    assert out.endswith("@host:1/0")


# -- logs -----------------------------------------------------------------------------------


@pytest.fixture
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("_restore_structlog")
def test_json_logs_never_carry_a_secret() -> None:
    out = io.StringIO()
    logs.configure(json=True, stream=out)
    log = structlog.get_logger("test")
    url = f"redis://user:{SECRET}@host:6379/0"
    log.info(
        "connecting",
        password=SECRET,
        url=redact_url(url),
        api_key=SECRET,
        redisPassword=SECRET,
        secret_token=SECRET,
        symbol="BTC/USDT",
    )
    text = out.getvalue()
    assert SECRET not in text
    line = json.loads(text.strip())
    assert line["event"] == "connecting"
    assert line["level"] == "info"
    assert line["symbol"] == "BTC/USDT"  # ordinary fields are untouched
    assert line["password"] == "***"
    assert line["url"] == "redis://user:***@host:6379/0"
    assert "timestamp" in line


@pytest.mark.usefixtures("_restore_structlog")
def test_log_level_filters() -> None:
    out = io.StringIO()
    logs.configure(level="warning", json=True, stream=out)
    log = structlog.get_logger("test")
    log.info("quiet")
    log.warning("loud")
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["loud"]


@pytest.mark.usefixtures("_restore_structlog")
def test_non_tty_stream_defaults_to_json() -> None:
    out = io.StringIO()  # isatty() is False, like docker or a pipe
    logs.configure(stream=out)
    structlog.get_logger("test").info("hello", n=1)
    assert json.loads(out.getvalue())["n"] == 1


def test_exchange_settings_options_are_kept() -> None:
    cfg = ExchangeSettings(options={"options": {"watchTrades": {"name": "trade"}}})
    assert cfg.options == {"options": {"watchTrades": {"name": "trade"}}}


@pytest.mark.parametrize(
    ("name", "parser", "native"),
    [
        ("binance", "auto", True),  # the default: the native parser where one exists
        ("binance", "ccxt", False),
        ("binance", "native", True),
        ("okx", "auto", True),
        ("okx", "ccxt", False),
        ("bybit", "auto", True),
        ("kraken", "auto", False),  # no native parser: CCXT's path
    ],
)
def test_parser_auto_is_native_where_a_native_parser_exists(
    name: str, parser: str, native: bool
) -> None:
    cfg = ExchangeSettings(name=name, symbols=["BTC/USDT"], parser=parser)  # type: ignore[arg-type]
    assert cfg.native is native
    assert ExchangeSettings(name=name, symbols=["BTC/USDT"]).parser == "auto"


def test_native_parser_on_an_exchange_without_one_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="exists for binance, bybit, okx only, not 'kraken'"):
        ExchangeSettings(name="kraken", symbols=["BTC/USDT"], parser="native")


# every credential form redis-py accepts in a URL (redis.asyncio.connection.parse_url)
CREDENTIAL_FORMS = [
    (f"redis://user:{SECRET}@host:6379/0", "redis://user:***@host:6379/0"),
    (f"redis://:{SECRET}@host:6379/0", "redis://:***@host:6379/0"),
    (f"rediss://user:{SECRET}@host:6380/0", "rediss://user:***@host:6380/0"),
    (f"redis://host:6379/0?password={SECRET}", "redis://host:6379/0?password=***"),
    (
        f"redis://host:6379/0?username=bot&password={SECRET}",
        "redis://host:6379/0?username=bot&password=***",
    ),
    (f"unix:///run/redis.sock?db=0&password={SECRET}", "unix:///run/redis.sock?db=0&password=***"),
    (
        f"rediss://host:6380/0?ssl_keyfile=/k.pem&ssl_password={SECRET}",
        "rediss://host:6380/0?ssl_keyfile=%2Fk.pem&ssl_password=***",
    ),
    (f"redis://user:{SECRET.replace('-', '%2D')}@host/0", "redis://user:***@host/0"),
]


@pytest.mark.parametrize(("url", "redacted"), CREDENTIAL_FORMS)
def test_every_credential_form_is_redacted(url: str, redacted: str) -> None:
    from marketbus.redaction import has_credentials, scrub

    assert redact_url(url) == redacted
    assert has_credentials(url)
    line = f"error connecting to {url}: refused"
    assert SECRET not in scrub(line) and "%2D" not in scrub(line).split("@")[0][-12:]


@pytest.mark.usefixtures("_restore_structlog")
@pytest.mark.parametrize(("url", "redacted"), CREDENTIAL_FORMS[:7])
def test_a_password_in_any_url_form_never_reaches_a_log_line(url: str, redacted: str) -> None:
    """The publisher logs its Redis URL at start (publisher_started): every form is masked,
    and the password itself is masked wherever else it shows up (an error message)."""
    out = io.StringIO()
    logs.configure("info", json=True, stream=out)
    settings = RedisSettings(url=url)
    settings.resolved_password()  # what connect() does: registers the URL's secrets
    log = structlog.get_logger("t")
    log.info("publisher_started", redis=url)
    log.warning("redis_unavailable", error=f"AuthenticationError: bad password {SECRET}")
    text = out.getvalue()
    assert SECRET not in text
    assert json.loads(text.splitlines()[0])["redis"] == redacted
