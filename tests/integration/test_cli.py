"""The ``marketbus`` command as users run it: real processes, real redis-server, the fake exchange.

Every process here is started by a test and stopped by it; each test checks the exit code,
that nothing printed a traceback, and (for ``demo``) that no child process is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import redis
from typer.testing import CliRunner, Result

from marketbus import codec
from marketbus.keys import status_key
from marketbus.models import Ticker
from marketbus_cli import app
from tests.redis_server import RedisServer, free_port, running_redis

pytestmark = pytest.mark.integration

MARKETBUS = str(Path(sys.executable).with_name("marketbus"))
STREAMS = [
    "md:{binance:BTC/USDT}:ticker",
    "md:{binance:BTC/USDT}:trades",
    "md:{binance:ETH/USDT}:ticker",
    "md:{binance:ETH/USDT}:trades",
]
PASSWORD = "s3cret-Pa55-word"  # grep'd for in every output


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MARKETBUS_") and k not in ("REDIS_URL", "COLUMNS")
    }
    env.update(PYTHONUNBUFFERED="1", COLUMNS="160", **extra)
    return env


def start(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, stderr: Any = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [MARKETBUS, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr,
        env=env or clean_env(),
        cwd=cwd,
    )


def run(*args: str, timeout: float = 30, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    p = subprocess.run(
        [MARKETBUS, *args], capture_output=True, timeout=timeout, env=env or clean_env()
    )
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """The same command in this process (for exit codes and messages: no start-up cost)."""
    unset: dict[str, str | None] = {
        k: None for k in os.environ if k.startswith("MARKETBUS_") or k == "REDIS_URL"
    }
    return CliRunner().invoke(app, list(args), env={**unset, **(env or {})})


_unread: dict[int, tuple[IO[bytes], bytes]] = {}


def read_line(stream: IO[bytes], timeout: float, want: Callable[[str], bool] = bool) -> str:
    """The first line on ``stream`` for which ``want`` holds (or fail after ``timeout``).

    Reads the pipe unbuffered and keeps what follows the line for the next call: lines a
    buffered reader had already pulled in would be invisible to ``select``.
    """
    fd = stream.fileno()
    _, buf = _unread.get(id(stream), (stream, b""))
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    try:
        while True:
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode(errors="replace")
                seen.append(line)
                if want(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # EOF: the process ended
            buf += chunk
    finally:
        _unread[id(stream)] = (stream, buf)
    raise AssertionError(f"no expected line within {timeout} s; got {seen[-10:]}")


def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> float:
    """Send ``sig``, wait; how many seconds it took. Kills it (and fails) when it hangs."""
    t0 = time.monotonic()
    p.send_signal(sig)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        raise AssertionError(f"{p.args!r} did not stop within {timeout} s of {sig}") from None
    return time.monotonic() - t0


def no_traceback(*outputs: str) -> None:
    for out in outputs:
        assert "Traceback" not in out, out


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc; no psutil needed)."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(d.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


# -- the fake exchange process -------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    p = start("fake-exchange", "--synthetic", "3", "--rate", "200", stderr=subprocess.DEVNULL)
    try:
        assert p.stdout is not None
        yield read_line(p.stdout, 30)
    finally:
        stop(p, signal.SIGINT)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_fake_exchange_prints_its_url_first_serves_and_stops_on_signal(sig: int) -> None:
    p = start("fake-exchange", "--synthetic", "3", "--rate", "200")
    assert p.stdout is not None
    url = read_line(p.stdout, 30)
    assert url.startswith("http://127.0.0.1:") and int(url.rsplit(":", 1)[1]) > 0
    with urllib.request.urlopen(f"{url}/api/v3/exchangeInfo", timeout=10) as r:
        info = json.loads(r.read())
    assert any(s["symbol"] == "BTCUSDT" for s in info["symbols"])
    assert stop(p, sig) < 5
    assert p.returncode == 0
    assert p.stderr is not None
    no_traceback(p.stderr.read().decode())


def test_fake_exchange_bad_options_are_one_line_errors() -> None:
    r = invoke("fake-exchange", "--synthetic", "2", "--rate", "0")
    assert r.exit_code == 2 and "--rate" in r.stderr
    r = invoke("fake-exchange", "--recording", "/nonexistent.jsonl")
    assert r.exit_code == 2 and "/nonexistent.jsonl" in r.stderr


# -- a running publisher: publish, tail, inspect, health ---------------------------------


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    server: RedisServer
    client: Any  # redis.Redis: its stubs type every reply as optional
    log: Path


@pytest.fixture(scope="module")
def publisher(fake_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    log = tmp_path_factory.mktemp("pub") / "publisher.log"
    with running_redis() as server, log.open("wb") as out:
        p = start(
            "publish", "--exchange", "binance", "--symbols", "BTCUSDT,eth-usdt",
            "--channels", "ticker,trades", "--exchange-url", fake_url,
            "--redis-url", server.url, stderr=out,
        )  # fmt: skip
        client = redis.Redis.from_url(server.url)
        try:
            wait_for(
                lambda: all(client.xlen(k) > 0 for k in STREAMS) or p.poll() is not None,
                30, "the publisher's streams",
            )  # fmt: skip
            assert p.poll() is None, log.read_text()
            yield Running(p, server, client, log)
        finally:
            if p.poll() is None:
                stop(p)
            client.close()


def test_publish_normalizes_symbols_into_streams_and_logs_json(publisher: Running) -> None:
    keys = {k.decode() for k in publisher.client.scan_iter(match="md:*")}
    assert keys == set(STREAMS)  # BTCUSDT and eth-usdt became BTC/USDT and ETH/USDT
    _, fields = publisher.client.xrevrange(STREAMS[0], count=1)[0]
    assert codec.decode_fields(fields).symbol == "BTC/USDT"
    lines = [ln for ln in publisher.log.read_text().splitlines() if ln.strip()]
    events = [json.loads(ln)["event"] for ln in lines]  # stderr is a file: JSON lines
    assert "publisher_started" in events


def test_tail_json_prints_count_records_and_exits(publisher: Running) -> None:
    url = publisher.server.url
    both = start("tail", "--json", "--count", "5", "binance:BTC/USDT", "--redis-url", url)
    trades = start(
        "tail", "--json", "--count", "3", "--channels", "trades", "binance:ETH/USDT",
        "--redis-url", url,
    )  # fmt: skip
    (out, err), (tout, terr) = both.communicate(timeout=30), trades.communicate(timeout=30)
    assert both.returncode == 0, err
    lines = out.decode().splitlines()
    assert len(lines) == 5
    for line in lines:
        r = json.loads(line)
        assert (r["exchange"], r["symbol"]) == ("binance", "BTC/USDT")
        price = r["price"] if r["channel"] == "trades" else r["last"]
        assert price > 0 and r["ts_ms"] > 0
    assert trades.returncode == 0, terr
    records = [json.loads(x) for x in tout.decode().splitlines()]
    assert len(records) == 3
    assert all(r["channel"] == "trades" and r["symbol"] == "ETH/USDT" for r in records)
    assert all(r["price"] > 0 and r["id"] for r in records)


def test_inspect_json_lists_streams_workers_and_undecodable_entries(publisher: Running) -> None:
    c = publisher.client
    c.xadd("md:{binance:SOL/USDT}:ticker", {"d": b"\xc1not msgpack"})
    c.xadd("md:{binance:SOL/USDT}:ticker", codec.encode(Ticker(
        exchange="binance", symbol="SOL/USDT", ts_ms=1, recv_ns=2, last=150.5,
    )))  # fmt: skip
    c.set("md:{binance:XRP/USDT}:trades", "a string, not a stream")
    try:
        code, out, err = run("inspect", "--json", "--redis-url", publisher.server.url)
    finally:
        c.delete("md:{binance:SOL/USDT}:ticker", "md:{binance:XRP/USDT}:trades")
    assert code == 0, err
    data = json.loads(out)
    streams = {s["key"]: s for s in data["streams"]}
    for k in STREAMS:
        s = streams[k]
        assert s["length"] > 0
        assert s["first"]["record"]["symbol"] == s["symbol"]
        assert s["last"]["record"]["ts_ms"] >= s["first"]["record"]["ts_ms"]
    sol = streams["md:{binance:SOL/USDT}:ticker"]
    assert "undecodable" in sol["first"] and sol["last"]["record"]["last"] == 150.5
    assert "not a stream" in streams["md:{binance:XRP/USDT}:trades"]["error"]
    (worker,) = data["workers"]
    assert worker["exchange"] == "binance" and worker["state"] == "CONNECTED"
    assert sorted(worker["markets"]) == ["BTC/USDT", "ETH/USDT"]
    # the table form prints too
    r = invoke("inspect", "--redis-url", publisher.server.url)
    assert r.exit_code == 0 and "md:{binance:BTC/USDT}:ticker" in r.stdout, r.stderr


def test_health_zero_while_connected_one_otherwise(publisher: Running) -> None:
    url = publisher.server.url
    r = invoke("health", "--exchange", "binance", "--redis-url", url)
    assert r.exit_code == 0 and "CONNECTED" in r.stdout
    r = invoke("health", "--exchange", "kraken", "--redis-url", url)
    assert r.exit_code == 1 and "not running" in r.stdout
    r = invoke("health", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert r.exit_code == 1 and "not reachable" in r.stderr


# -- stopping, passwords, bad configuration, unreachable Redis ----------------------------


def test_sigterm_stops_publisher_cleanly_with_password_from_a_file(
    fake_url: str, tmp_path: Path
) -> None:
    pw = tmp_path / "redis.pw"
    pw.write_text(PASSWORD + "\n")
    with running_redis("--requirepass", PASSWORD) as server:
        client = redis.Redis.from_url(server.url, password=PASSWORD)
        p = start(
            "publish", "--symbols", "BTC/USDT", "--exchange-url", fake_url,
            "--redis-url", server.url, "--redis-password-file", str(pw),
        )  # fmt: skip
        try:
            wait_for(lambda: client.xlen(STREAMS[0]) > 0 or p.poll() is not None, 30, "records")
            assert stop(p) < 10
            out, err = p.communicate()
            assert p.returncode == 0, err
            state = client.hget(status_key("binance"), "state")
            assert state in (None, b"STOPPED")
            code, hout, _ = run(
                "health", "--redis-url", server.url, "--redis-password-file", str(pw)
            )
            assert code == 1, hout
        finally:
            if p.poll() is None:
                p.kill()
            client.close()
    text = out.decode() + err.decode()
    assert PASSWORD not in text
    assert "publisher_stopped" in text
    no_traceback(text)


def test_wrong_password_fails_clearly_without_showing_it(fake_url: str) -> None:
    env = clean_env(MARKETBUS_REDIS__PASSWORD=PASSWORD)
    with running_redis("--requirepass", "the-right-one") as server:
        pub = start(
            "publish", "--symbols", "BTCUSDT", "--exchange-url", fake_url,
            "--redis-url", server.url, env=env,
        )  # fmt: skip
        code, out, err = run("inspect", "--redis-url", server.url, env=env)
        try:
            pout, perr = pub.communicate(timeout=30)
        finally:
            if pub.poll() is None:
                pub.kill()
    assert code == 1 and "credentials" in err
    assert pub.returncode not in (0, None)
    perr_text = perr.decode()
    assert "credentials" in perr_text
    for text in (out, err, pout.decode(), perr_text):
        assert PASSWORD not in text
    no_traceback(err, perr_text)


def _bad_configs(tmp_path: Path) -> list[tuple[list[str], tuple[str, ...]]]:
    bad_field = tmp_path / "bad-field.toml"
    bad_field.write_text('[[exchanges]]\nname = "binance"\nsymbolz = ["BTC/USDT"]\n')
    bad_value = tmp_path / "bad-value.toml"
    bad_value.write_text("[redis]\nmaxlen = -5\n")
    return [
        (["publish", "--symbols", ""], ("symbols", "at least one symbol")),
        (["publish", "--symbols", " , "], ("symbols", "at least one symbol")),
        (["publish", "--channels", "foo"], ("channels", "'foo'")),
        (["publish", "--exchange", "nope"], ("name", "'nope'")),
        (["publish", "--config", str(bad_field)], ("symbolz", "BTC/USDT")),
        (["publish", "--config", str(bad_value)], ("redis.maxlen", "-5")),
        (["publish", "--config", str(tmp_path / "missing.toml")], ("missing.toml",)),
        (["publish", "--redis-url", "http://localhost"], ("redis.url", "http://localhost")),
        (["publish", "--log-level", "loud"], ("--log-level", "loud")),
        (["publish", "--parser", "fast"], ("parser", "'fast'")),
        (
            ["publish", "--exchange", "kraken", "--parser", "native"],
            ("native", "binance, bybit, okx"),
        ),
        (["tail", "--channels", "foo", "--json"], ("channels", "'foo'")),
    ]


def test_bad_configuration_exits_2_naming_field_and_value(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # never reached: config fails first
    for args, wanted in _bad_configs(tmp_path):
        argv = args if "--redis-url" in args else [*args, "--redis-url", url]
        r = invoke(*argv)
        assert r.exit_code == 2, (args, r.stderr, r.exception)
        for w in wanted:
            assert w in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


def test_bad_configuration_in_a_real_process(tmp_path: Path) -> None:
    args, wanted = _bad_configs(tmp_path)[4]
    code, out, err = run(*args)
    assert code == 2
    assert all(w in err for w in wanted), err
    no_traceback(out, err)


def test_unreachable_redis_keeps_the_publisher_running(fake_url: str, tmp_path: Path) -> None:
    log = tmp_path / "pub.log"
    with log.open("wb") as out:
        p = start(
            "publish", "--symbols", "BTCUSDT", "--exchange-url", fake_url,
            "--redis-url", f"redis://127.0.0.1:{free_port()}/0", stderr=out,
        )  # fmt: skip
        try:
            wait_for(
                lambda: "redis_unreachable_at_start" in log.read_text() or p.poll() is not None,
                30, "the unreachable-Redis log line",
            )  # fmt: skip
            time.sleep(1.5)
            assert p.poll() is None, log.read_text()
            stop(p, timeout=20)  # the sink drains (up to its deadline) first
        finally:
            if p.poll() is None:
                p.kill()
    text = log.read_text()
    assert p.returncode == 0, text
    assert "redis_unavailable" in text or "redis_unreachable_at_start" in text
    no_traceback(text)


# -- demo ------------------------------------------------------------------------------------


def test_demo_offline_with_redis_url_stops_on_sigint_leaving_nothing(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    p = start("demo", "--offline", "--speed", "20", "--redis-url", redis_server.url, cwd=tmp_path)
    try:
        assert p.stdout is not None
        line = read_line(p.stdout, 30, lambda s: "replay" in s)
        assert "offline" in line and "fake exchange at http://127.0.0.1:" in line
        okx = read_line(p.stdout, 30, lambda s: "OKX" in s)
        assert "BTC/USDT" in okx and "fake OKX at http://127.0.0.1:" in okx
        read_line(p.stdout, 30, lambda s: "Ctrl-C" in s)
        time.sleep(1.0)
        kids = descendants(p.pid)
        assert stop(p, signal.SIGINT) < 15
    finally:
        if p.poll() is None:
            p.kill()
    out, err = p.communicate()
    assert p.returncode == 0, err.decode()
    assert out.decode().rstrip().endswith("stopped.")
    assert not [k for k in kids if alive(k)]
    assert (tmp_path / ".run" / "publisher.log").read_text()  # the publisher logged there
    no_traceback(out.decode(), err.decode())


def test_demo_offline_without_redis_url_runs_and_stops_its_own_redis(tmp_path: Path) -> None:
    p = start("demo", "--offline", cwd=tmp_path)
    try:
        assert p.stdout is not None
        line = read_line(p.stdout, 30, lambda s: "redis-server" in s)
        port = int(line.split("redis://127.0.0.1:")[1].split("/")[0])
        assert port_open(port)
        servers = [k for k in descendants(p.pid) if "redis-server" in _cmdline(k)]
        assert len(servers) == 1
        read_line(p.stdout, 30, lambda s: "replay" in s)
        assert stop(p, signal.SIGINT) < 15
    finally:
        if p.poll() is None:
            p.kill()
    _, err = p.communicate()
    assert p.returncode == 0, err.decode()
    assert not port_open(port)
    assert not alive(servers[0])


def test_demo_with_unreachable_redis_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    r = invoke("demo", "--offline", env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert r.exit_code == 1, r.stderr
    assert "not reachable" in r.stderr and "stopped." not in r.stdout


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# -- OKX, live subscription changes ---------------------------------------------------------


def test_okx_fake_publisher_and_live_subscribe_from_the_command_line() -> None:
    """`fake-exchange --exchange okx`, `publish --exchange okx`, then `subscribe` and
    `unsubscribe` on the running publisher: each says what it applied."""
    fx = start("fake-exchange", "--exchange", "okx", "--synthetic", "3", "--rate", "300",
               stderr=subprocess.DEVNULL)  # fmt: skip
    pub = None
    try:
        assert fx.stdout is not None
        url = read_line(fx.stdout, 30)
        with urllib.request.urlopen(f"{url}/api/v5/public/instruments?instType=SPOT") as r:
            insts = [i["instId"] for i in json.loads(r.read())["data"]]
        assert "BTC-USDT" in insts
        with running_redis() as server:
            redis_url = server.url
            env = clean_env(REDIS_URL=redis_url)
            pub = start("publish", "--exchange", "okx", "--exchange-url", url, "--symbols",
                        "BTC-USDT", "--channels", "trades", env=env)  # fmt: skip
            client = redis.Redis.from_url(redis_url)

            def connected() -> bool:
                return client.hget(status_key("okx"), "state") == b"CONNECTED"

            wait_for(connected, 30, "the okx worker to connect")
            code, out, err = run("subscribe", "okx", "eth-usdt", "--channels", "book,trades",
                                 env=env)  # fmt: skip
            assert code == 0, err
            assert "eth-usdt: active" in out
            wait_for(lambda: client.xlen("md:{okx:ETH/USDT}:book") > 0, 15, "ETH/USDT books")
            code, out, _ = run("subscribe", "okx", "NOPE-USDT", env=env)
            assert code == 1 and "NOPE-USDT: unknown" in out
            code, out, _ = run("unsubscribe", "okx", "BTC/USDT", env=env)
            assert code == 0 and "BTC/USDT: removed" in out
            code, out, _ = run("subscriptions", "okx", "--json", env=env)
            data = json.loads(out)
            assert data["active"] == {"book": ["ETH/USDT"], "trades": ["ETH/USDT"]}
            code, out, _ = run("subscriptions", "okx", "--reset", env=env)
            assert code == 0 and "the configuration applies" in out
            wait_for(
                lambda: json.loads(run("subscriptions", "okx", "--json", env=env)[1])["active"]
                == {"trades": ["BTC/USDT"]},
                15, "the reset to apply",
            )  # fmt: skip
            client.close()
            assert stop(pub) < 10
            assert pub.stderr is not None
            no_traceback(pub.stderr.read().decode())
    finally:
        if pub is not None and pub.poll() is None:
            pub.kill()
        stop(fx, signal.SIGINT)


def test_subscribe_names_a_bad_exchange_or_channel_in_one_line() -> None:
    r = invoke("subscribe", "nosuchexchange", "BTC/USDT")
    assert r.exit_code == 2 and "nosuchexchange" in r.stderr
    r = invoke("subscribe", "binance", "BTC/USDT", "--channels", "bogus")
    assert r.exit_code == 2 and "bogus" in r.stderr
    r = invoke("subscribe", "binance@no way", "BTC/USDT")
    assert r.exit_code == 2 and "instance" in r.stderr
    r = invoke("publish", "--instance", "Bad Name!")
    assert r.exit_code == 2 and "instance" in r.stderr
