"""The archive's operations side through the command line: ``marketbus archive`` with
``--config`` (its ``[archive]`` section, flags over it), its /metrics and status hash, and the
``compact``, ``prune`` and ``status`` subcommands, against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner, Result

from archive.status import archive_status_key
from marketbus_cli import app
from tests.archive_data import part_files
from tests.factories import trade
from tests.integration.test_archive import ROOT, eventually, group_idle, publish, records
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

runner = CliRunner()


def toml(path: Path, url: str, **archive: object) -> Path:
    lines = ["[redis]", f'url = "{url}"', "maxlen = 5000", "", "[archive]"]
    lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in archive.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def start(cfg: Path, log: Path, *opts: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "marketbus_cli", "archive", "--config", str(cfg), "--log-json",
           *opts]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETBUS_")}
    env.pop("REDIS_URL", None)
    with open(log, "ab") as err:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env)


async def logged(log: Path, event: str, proc: subprocess.Popen[bytes]) -> dict[str, object]:
    async with asyncio.timeout(30):
        while proc.poll() is None:
            for line in (await asyncio.to_thread(log.read_bytes)).splitlines():
                if line.startswith(b"{") and orjson.loads(line).get("event") == event:
                    return dict(orjson.loads(line))
            await asyncio.sleep(0.05)
    raise AssertionError((await asyncio.to_thread(log.read_text))[-2000:])


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        body: bytes = resp.read()
    return body


async def scrape(port: int) -> dict[str, float]:
    text = (await asyncio.to_thread(get, port, "/metrics")).decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


async def cli(*argv: str) -> Result:
    """The command in a thread: it runs an event loop of its own."""
    return await asyncio.to_thread(runner.invoke, app, list(argv))


async def test_archive_runs_from_its_config_section_with_metrics_and_status(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    recs = records(200)
    await publish(redis, recs)
    cfg = toml(
        tmp_path / "marketbus.toml", redis_server.url, dir=str(tmp_path / "from-file"),
        name="cfg-name", roll_age_s=0.1, rescan_s=0.2, metrics_port=0, status_every_s=0.2,
    )  # fmt: skip
    log = tmp_path / "archive.log"
    root = tmp_path / "from-flag"
    proc = start(cfg, log, "--dir", str(root))  # the flag wins over the file's dir
    try:
        serving = await logged(log, "archive_metrics_serving", proc)
        port = int(str(serving["port"]))
        await eventually(lambda: group_idle(redis))

        async def counted() -> bool:
            return (await scrape(port)).get("marketbus_archive_rows_total") == len(recs)

        await eventually(counted)
        m = await scrape(port)
        assert m["marketbus_archive_writable"] == 1 and m["marketbus_archive_stream_maxlen"] == 5000
        assert m["marketbus_archive_lag_max_entries"] >= 0
        assert m["marketbus_archive_files_total"] >= 5
        assert orjson.loads(await asyncio.to_thread(get, port, "/readyz"))["state"] == "archiving"
        status = await redis.hgetall(archive_status_key("cfg-name"))
        assert status[b"state"] == b"archiving"
        assert 0 < await redis.ttl(archive_status_key("cfg-name")) <= 10
        stats = orjson.loads(status[b"stats"])
        assert (stats["name"], stats["dir"], stats["maxlen"]) == ("cfg-name", str(root), 5000)
        r = await cli("archive", "status", "--config", str(cfg), "--json")
        assert r.exit_code == 0, r.output
        (seen,) = orjson.loads(r.stdout)
        assert seen["healthy"] and seen["name"] == "cfg-name"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert part_files(root) and not (tmp_path / "from-file").exists()
    status = await redis.hgetall(archive_status_key("cfg-name"))
    assert status[b"state"] == b"stopped"
    r = await cli("archive", "status", "--config", str(cfg), "--name", "cfg-name", "--json")
    assert r.exit_code == 1 and "cfg-name is stopped" in orjson.loads(r.stdout)[0]["why"]


async def test_archive_status_says_when_a_lag_nears_maxlen_or_nobody_reports(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    url = ["--redis-url", redis_server.url]
    r = await cli("archive", "status", *url)
    assert r.exit_code == 1 and "no archiver has reported status" in r.output
    now = int(time.time() * 1000)
    behind = {"name": "far", "state": "archiving", "updated_ms": now, "lag": 4000,
              "lag_max": 3000, "maxlen": 5000, "lag_ratio": 0.6}  # fmt: skip
    await redis.hset(archive_status_key("far"), mapping={"stats": orjson.dumps(behind)})
    r = await cli("archive", "status", *url, "--json")
    assert r.exit_code == 1
    (seen,) = orjson.loads(r.stdout)
    assert not seen["healthy"] and "60% of MAXLEN 5000" in seen["why"]
    fine = {**behind, "name": "ok", "lag_max": 10, "lag_ratio": 0.002}
    await redis.hset(archive_status_key("ok"), mapping={"stats": orjson.dumps(fine)})
    assert (await cli("archive", "status", *url, "--name", "ok")).exit_code == 0
    old = {**fine, "name": "old", "updated_ms": now - 120_000}
    await redis.hset(archive_status_key("old"), mapping={"stats": orjson.dumps(old)})
    r = await cli("archive", "status", *url, "--name", "old")
    assert r.exit_code == 1 and "120 s old" in r.stdout


def test_the_subcommands_compact_and_prune(tmp_path: Path) -> None:
    from archive.store import Store
    from tests.archive_data import commit_records

    store = Store(tmp_path, writer="w")
    store.open()
    day = 86_400_000
    for i in range(6):  # three commits on each of two old days
        ts = 1_600_000_000_000 + (i % 2) * day
        commit_records(store, None, [(f"{i + 1}-0", trade(i).model_copy(update={"ts_ms": ts}))])
    store.close()
    r = runner.invoke(app, ["archive", "compact", "--dir", str(tmp_path), "--grace", "0",
                            "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    report = orjson.loads(r.stdout)["compacted"]
    assert (report["partitions"], report["files_in"], report["rows"]) == (2, 6, 6)
    assert len(part_files(tmp_path)) == 2
    # options before the subcommand count too; a day as --date; nothing left to do
    r = runner.invoke(app, ["archive", "--dir", str(tmp_path), "compact", "--date", "2020-09-13"])
    assert r.exit_code == 0 and "compacted: 0 partitions" in r.stdout
    r = runner.invoke(app, ["archive", "prune", "--dir", str(tmp_path), "--keep-days", "1",
                            "--grace", "0"])  # fmt: skip
    assert r.exit_code == 0 and "pruned: 2 partitions, 2 files" in r.stdout
    assert part_files(tmp_path) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["archive", "--dir", "s3://bucket/archive"], "only local directories"),
        (["archive"], "--dir (or dir under [archive]) is required"),
        (["archive", "compact", "--dir", "/nonexistent/x"], "no archive directory"),
        (["archive", "compact", "--dir", ".", "--older-than", "soon"], "not a duration"),
        (["archive", "compact", "--dir", ".", "--date", "13/09/2020"], "not YYYY-MM-DD"),
        (["archive", "prune", "--dir", "."], "--keep-days (or keep_days under [archive])"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in list(os.environ):
        if k.startswith("MARKETBUS_"):
            monkeypatch.delenv(k)
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, r.output
    assert message in re.sub(r"\s+", " ", r.output)


def test_a_bad_archive_section_names_the_field(tmp_path: Path) -> None:
    cfg = toml(tmp_path / "m.toml", "redis://127.0.0.1:1/0", dir=str(tmp_path), roll_age_s=-1)
    r = runner.invoke(app, ["archive", "--config", str(cfg)])
    assert r.exit_code == 2 and "archive.roll_age_s" in r.output
