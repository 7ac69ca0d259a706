"""The monitoring stack: compose services, Prometheus config and alert rules, Grafana dashboard.

No Docker here: all of it is validated by parsing. Every metric a panel or a rule queries must be
one the publisher's or the archiver's ``/metrics`` really serves (read from the running aiohttp
apps' registries, not from a list), one of the redis_exporter metrics named below, or a proposed
one the panel says is missing. Labels are checked the same way, so ``by (channel)`` on a metric without a ``channel``
label (an always-empty legend in Grafana) fails here.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fakeredis
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from archive import ArchiveConfig, Archiver
from archive.metrics import make_app as make_archive_app
from marketbus.keys import stream_key
from marketbus.models import Channel
from marketbus.settings import Settings, load_settings
from publisher.app import Publisher
from publisher.http import make_app
from publisher.state import ConnState
from tests.factories import ticker, trade
from tests.unit.test_compose import SERVICES, archivers, parse_cli, publishers, service_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
ALERTS: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
ALERTS_TEST: dict[str, Any] = yaml.safe_load(
    (DEPLOY / "prometheus" / "alerts_test.yml").read_text()
)
PROVISIONING = DEPLOY / "grafana" / "provisioning"
DATASOURCES: list[dict[str, Any]] = [
    ds
    for f in sorted((PROVISIONING / "datasources").glob("*.yml"))
    for ds in yaml.safe_load(f.read_text())["datasources"]
]
PROVIDERS: list[dict[str, Any]] = [
    p
    for f in sorted((PROVISIONING / "dashboards").glob("*.yml"))
    for p in yaml.safe_load(f.read_text())["providers"]
]
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "marketbus.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

# Official images only, pinned to a full release tag (never latest or a floating major).
IMAGES = {
    "prometheus": "prom/prometheus",
    "grafana": "grafana/grafana",
    "redis-exporter": "oliver006/redis_exporter",
}
PINNED_TAG = re.compile(r"v?\d+\.\d+\.\d+")

# Outside services, not our code: the redis_exporter metrics the dashboard and rules use, with
# their labels, as documented in oliver006/redis_exporter (exporter.go's metric descriptions and
# streams.go; stream_entries_added_total since v1.88). UNTESTED against a real exporter here:
# no Docker and no exporter binary on this machine.
REDIS_EXPORTER_METRICS: dict[str, frozenset[str]] = {
    "redis_up": frozenset(),
    "redis_memory_used_bytes": frozenset(),
    "redis_memory_max_bytes": frozenset(),
    "redis_evicted_keys_total": frozenset(),
    "redis_stream_length": frozenset({"db", "stream"}),
    "redis_stream_entries_added_total": frozenset({"db", "stream"}),
    "redis_stream_group_lag": frozenset({"db", "stream", "group"}),
    "redis_stream_group_messages_pending": frozenset({"db", "stream", "group"}),
}
# Series Prometheus itself writes for every scrape target.
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
# Metrics a panel needs that nothing exports yet (see docs/operations.md). A panel using one
# must say so in its description; once our code exports it, this test fails until it is moved out.
PROPOSED_METRICS: dict[str, frozenset[str]] = {
    "marketbus_consumer_lag_seconds": frozenset({"consumer", "exchange", "channel"}),
}
# Label values our code enumerates: a rule on state="FAIL" would never fire.
ENUMERATED_VALUES = {"state": frozenset(s.value for s in ConnState)}


# -- a small PromQL reader: metric names, label matchers, grouping labels ----------------------

AGGREGATIONS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk "
    "limit_ratio".split()
)
GROUPING = frozenset("by without on ignoring group_left group_right".split())
KEYWORDS = frozenset("and or unless offset bool atan2 inf nan".split()) | GROUPING
TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<range>\[[^\]]*\])
    |(?P<number>\.?\d[\w.]*)
    |(?P<var>\$\{?\w+\}?)
    |(?P<ident>[A-Za-z_:][\w:]*)
    |(?P<punct>[{}(),])
    |(?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=@])
    |(?P<space>\s+)""",
    re.X,
)


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass
class Query:
    """What one PromQL expression refers to."""

    metrics: dict[str, list[Matcher]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)  # by/without/on/ignoring/group_* labels
    created: set[str] = field(default_factory=set)  # label_replace/label_join destinations
    sources: set[str] = field(default_factory=set)  # label_replace source labels


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 20]!r} in {expr!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "space":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def read_promql(expr: str) -> Query:
    """Metric names (with their matchers) and label names used in ``expr``."""
    toks = tokens(expr)
    q = Query()
    calls: list[list[Any]] = []  # per open paren: [function or grouping word, argument index]
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "ident":
            word = text.lower()
            if word in GROUPING and nxt == "(":
                j = i + 2
                while toks[j][1] != ")":
                    if toks[j][0] == "ident":
                        q.grouping.add(toks[j][1])
                    j += 1
                i = j + 1
                continue
            if word in KEYWORDS or word in AGGREGATIONS:
                i += 1
                continue
            if nxt == "(":  # a function call
                calls.append([text, 0])
                i += 2
                continue
            matchers: list[Matcher] = []
            if nxt == "{":
                i, matchers = read_matchers(toks, i + 1, expr)
            q.metrics.setdefault(text, []).extend(matchers)
            i += 1
            continue
        if text == "{":
            raise ValueError(f"a selector without a metric name is not supported: {expr!r}")
        if text == "(":
            calls.append(["", 0])
        elif text == ")":
            if not calls:
                raise ValueError(f"unbalanced parentheses in {expr!r}")
            calls.pop()
        elif text == "," and calls:
            calls[-1][1] += 1
        elif kind == "string" and calls:
            fn, arg = calls[-1]
            if (fn, arg) in (("label_replace", 1), ("label_join", 1)):
                q.created.add(unquote(text))
            elif (fn, arg) == ("label_replace", 3):
                q.sources.add(unquote(text))
        i += 1
    if calls:
        raise ValueError(f"unbalanced parentheses in {expr!r}")
    return q


def read_matchers(toks: list[tuple[str, str]], i: int, expr: str) -> tuple[int, list[Matcher]]:
    """From the ``{`` at ``i``: the matchers, and the index of the closing ``}``."""
    out: list[Matcher] = []
    i += 1
    while toks[i][1] != "}":
        (lk, label), (_, op), (vk, value) = toks[i : i + 3]
        if lk != "ident" or op not in ("=", "!=", "=~", "!~") or vk != "string":
            raise ValueError(f"cannot read the matchers of {expr!r}")
        out.append(Matcher(label, op, unquote(value)))
        i += 3
        if toks[i][1] == ",":
            i += 1
    return i, out


def unquote(s: str) -> str:
    return s[1:-1]


# -- what our code exports ---------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    labels: dict[str, frozenset[str]]  # metric (sample) name -> label names
    families: dict[str, str]  # family name -> type


def sample_names(family: str, kind: str) -> set[str]:
    """The series names a family of ``kind`` is queried by (counters expose ``_total``)."""
    return {
        "counter": {f"{family}_total"},
        "histogram": {f"{family}_bucket", f"{family}_sum", f"{family}_count"},
        "summary": {family, f"{family}_sum", f"{family}_count"},
    }.get(kind, {family})


async def scrape_publisher() -> str:
    """/metrics of a real Publisher (two exchanges, one written record), via its aiohttp app."""
    settings = load_settings(
        exchanges=[
            {"name": "binance", "symbols": ["BTC/USDT"], "channels": ["ticker", "trades"]},
            {"name": "okx", "symbols": ["BTC/USDT"], "channels": ["ticker", "trades", "book"]},
        ]
    )
    pub = Publisher(settings, redis=fakeredis.FakeAsyncRedis())
    await pub.sink.start()
    try:
        pub.sink.put(trade(1))
        pub.sink.put(ticker(1, exchange="okx"))
        async with asyncio.timeout(10):
            while pub.sink.stats.written < 2:
                await asyncio.sleep(0.01)
        for w in pub.workers.values():  # as a connected worker: a frame seen, markets subscribed
            w.stats.last_frame_ns = time.time_ns()
            w.active = {Channel(c): list(w.cfg.symbols) for c in w.cfg.channels}
        async with TestClient(TestServer(make_app(pub))) as client:
            resp = await client.get("/metrics")
            assert resp.status == 200
            return await resp.text()
    finally:
        await pub.sink.stop(drain_timeout=1.0)


async def scrape_archiver() -> str:
    """/metrics of a real Archiver (not started: its figures as after some work)."""
    a = Archiver(fakeredis.FakeAsyncRedis(), "/nonexistent", ArchiveConfig(name="t"))
    a.stats.lag, a.stats.lag_max, a.stats.last_commit_ms = 12, 7, int(time.time() * 1000)
    async with TestClient(TestServer(make_archive_app(a, maxlen=100_000))) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        return await resp.text()


@pytest.fixture(scope="module")
def exported() -> Exported:
    text = asyncio.run(scrape_publisher()) + asyncio.run(scrape_archiver())
    labels: dict[str, set[str]] = {}
    families: dict[str, str] = {}
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam.type
        # every family must carry samples here, or its labels could not be checked
        assert fam.samples, f"{fam.name} has no sample: make scrape_publisher() produce one"
        for name in sample_names(fam.name, fam.type):
            labels.setdefault(name, set())
        for s in fam.samples:
            labels.setdefault(s.name, set()).update(s.labels)
    return Exported({k: frozenset(v) for k, v in labels.items()}, families)


# -- where the expressions are -----------------------------------------------------------------


def panels() -> Iterator[dict[str, Any]]:
    for p in DASHBOARD["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows hold their panels


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    for p in panels():
        for t in p.get("targets", []):
            yield f"panel {p['title']!r} {t['refId']}", t["expr"]


def template_queries() -> Iterator[tuple[str, str, str]]:
    """(where, metric expression, label) of each ``label_values(expr, label)`` variable."""
    for v in DASHBOARD.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        query = v["query"] if isinstance(v["query"], str) else v["query"]["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert m, f"variable {v['name']}: only label_values(metric, label) is supported"
        yield f"variable {v['name']!r}", m.group(1), m.group(2)


def alert_rules() -> Iterator[dict[str, Any]]:
    for g in ALERTS["groups"]:
        yield from g["rules"]


def all_exprs() -> Iterator[tuple[str, str]]:
    yield from dashboard_exprs()
    for where, expr, _ in template_queries():
        yield where, expr
    for r in alert_rules():
        yield f"alert {r['alert']}", r["expr"]


def job_names() -> set[str]:
    return {j["job_name"] for j in PROMETHEUS["scrape_configs"]}


def targets(job: str) -> list[str]:
    (cfg,) = [j for j in PROMETHEUS["scrape_configs"] if j["job_name"] == job]
    return [t for sc in cfg["static_configs"] for t in sc["targets"]]


def bind_mounts(service: str) -> dict[str, Path]:
    """Container path -> repo path of each ``./repo/path:/container/path[:ro]`` volume."""
    out: dict[str, Path] = {}
    for v in SERVICES[service].get("volumes", []):
        host, container, *mode = v.split(":")
        if host.startswith("./"):
            assert mode == ["ro"], f"{service}: {v} should be mounted read-only"
            out[container] = ROOT / host
    return out


def service_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a compose publisher runs with: its environment, then its flags."""
    for k in list(os.environ):
        if k.startswith("MARKETBUS_"):
            monkeypatch.delenv(k)
    monkeypatch.delenv("REDIS_URL", raising=False)
    for k, v in SERVICES[service].get("environment", {}).items():
        monkeypatch.setenv(k, str(v))
    params = parse_cli(SERVICES[service]["command"])
    return load_settings(metrics_port=params.get("metrics_port"))


# -- compose -----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(IMAGES))
def test_monitoring_services_use_official_images_with_pinned_tags(service: str) -> None:
    svc = SERVICES[service]
    assert "build" not in svc
    repo, _, tag = svc["image"].partition(":")
    assert repo == IMAGES[service]
    assert PINNED_TAG.fullmatch(tag), f"{svc['image']}: pin a full release tag"
    assert svc.get("restart") == "unless-stopped"


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_ui_ports_are_published_on_loopback_only(service: str) -> None:
    for p in SERVICES[service].get("ports", []):
        assert str(p).startswith("127.0.0.1:"), f"{service} publishes {p} beyond this host"


def test_prometheus_mounts_its_config_and_every_rule_file() -> None:
    mounts = bind_mounts("prometheus")
    for host in mounts.values():
        assert host.is_file(), f"{host} is mounted but not in the repo"
    flags = dict(a.removeprefix("--").split("=", 1) for a in SERVICES["prometheus"]["command"])
    assert mounts[flags["config.file"]] == DEPLOY / "prometheus" / "prometheus.yml"
    assert PROMETHEUS["rule_files"]
    for rule_file in PROMETHEUS["rule_files"]:
        assert rule_file in mounts, f"rule file {rule_file} is not mounted"
    assert mounts[PROMETHEUS["rule_files"][0]] == DEPLOY / "prometheus" / "alerts.yml"
    assert "web.listen-address" not in flags  # Grafana's datasource expects :9090


def test_grafana_mounts_provisioning_and_the_dashboard_folder() -> None:
    mounts = bind_mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    assert DATASOURCES and PROVIDERS
    (provider,) = PROVIDERS
    assert provider["type"] == "file"
    folder = mounts[provider["options"]["path"]]
    assert folder.is_dir() and DASHBOARD_FILE.parent == folder
    home = SERVICES["grafana"]["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home is not None:
        container_dir, _, name = home.rpartition("/")
        assert (mounts[container_dir] / name).is_file()


@pytest.mark.parametrize("service", publishers())
def test_prometheus_scrapes_each_publisher_on_its_configured_port(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service_settings(service, monkeypatch)
    assert s.metrics_port, f"{service} serves no /metrics: set MARKETBUS_METRICS_PORT"
    assert s.metrics_host in ("0.0.0.0", "::"), "loopback only: Prometheus could not reach it"
    assert f"{service}:{s.metrics_port}" in targets("marketbus-publisher")
    exposed = SERVICES[service].get("expose")
    if exposed is not None:
        assert str(s.metrics_port) in [str(p) for p in exposed]
    assert service in SERVICES["prometheus"]["depends_on"]


def test_prometheus_scrapes_no_publisher_that_is_not_in_compose() -> None:
    hosts = {t.rsplit(":", 1)[0] for t in targets("marketbus-publisher")}
    assert hosts == set(publishers())


@pytest.mark.parametrize("service", archivers())
def test_prometheus_scrapes_each_archiver_on_its_configured_port(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service_config(service, monkeypatch)
    assert s.archive.metrics_port, f"{service} serves no /metrics: set [archive] metrics_port"
    assert s.archive.metrics_host in ("0.0.0.0", "::"), "loopback only: Prometheus cannot reach it"
    assert f"{service}:{s.archive.metrics_port}" in targets("marketbus-archive")
    assert str(s.archive.metrics_port) in [str(p) for p in SERVICES[service].get("expose", [])]
    assert service in SERVICES["prometheus"]["depends_on"]


def test_prometheus_scrapes_no_archiver_that_is_not_in_compose() -> None:
    hosts = {t.rsplit(":", 1)[0] for t in targets("marketbus-archive")}
    assert hosts == set(archivers()) and hosts


def test_redis_exporter_reads_the_compose_redis_and_every_stream() -> None:
    env = SERVICES["redis-exporter"]["environment"]
    assert urlsplit(env["REDIS_ADDR"]).hostname == "redis"
    listen = env.get("REDIS_EXPORTER_WEB_LISTEN_ADDRESS", ":9121")
    assert targets("redis") == [f"redis-exporter:{listen.rsplit(':', 1)[1]}"]
    assert "redis-exporter" in SERVICES["prometheus"]["depends_on"]
    patterns = [p.split("=", 1)[-1] for p in env["REDIS_EXPORTER_CHECK_STREAMS"].split(",")]
    for channel in Channel:
        key = stream_key("binance", "BTC/USDT", channel)
        assert any(fnmatch.fnmatchcase(key, p) for p in patterns), f"{key} is not watched"


def test_the_datasource_is_the_compose_prometheus() -> None:
    (ds,) = DATASOURCES
    assert ds["type"] == "prometheus" and ds["uid"]
    url = urlsplit(ds["url"])
    assert (url.hostname, url.port) == ("prometheus", 9090)
    assert ds["jsonData"]["timeInterval"] == PROMETHEUS["global"]["scrape_interval"]


# -- Prometheus rules --------------------------------------------------------------------------

DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


def test_alert_rules_are_well_formed() -> None:
    names: list[str] = []
    assert {g["name"] for g in ALERTS["groups"]}  # each group named
    for g in ALERTS["groups"]:
        assert g["rules"], f"group {g['name']} has no rule"
        for r in g["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
            names.append(r["alert"])
            assert re.fullmatch(r"Marketbus[A-Z]\w+", r["alert"])
            assert r["expr"].strip()
            assert DURATION.fullmatch(r["for"]), f"{r['alert']}: for {r['for']!r}"
            assert r["labels"]["severity"] in ("critical", "warning")
            assert r["annotations"]["summary"] and r["annotations"]["description"]
    assert len(names) == len(set(names)), "alert names must be unique"


def test_promtool_unit_tests_exercise_existing_alerts() -> None:
    assert ALERTS_TEST["rule_files"] == ["alerts.yml"]
    known = {r["alert"] for r in alert_rules()}
    tested = {a["alertname"] for t in ALERTS_TEST["tests"] for a in t["alert_rule_test"]}
    assert tested <= known, tested - known
    assert len(tested) >= 8


# -- Grafana dashboard -------------------------------------------------------------------------

PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "text", "state-timeline", "row"}


def test_dashboard_has_the_fields_grafana_needs() -> None:
    (ds,) = DATASOURCES
    ref = {"type": "prometheus", "uid": ds["uid"]}
    assert DASHBOARD["uid"] and len(DASHBOARD["uid"]) <= 40
    assert DASHBOARD["title"]
    assert isinstance(DASHBOARD["schemaVersion"], int) and DASHBOARD["schemaVersion"] >= 36
    assert "id" not in DASHBOARD or DASHBOARD["id"] is None  # provisioning assigns it
    ids = [p["id"] for p in panels()]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels():
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert all(isinstance(g[k], int) and g[k] >= 0 for k in "hwxy")
        assert g["h"] >= 1 and 1 <= g["w"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] in ("row", "text"):
            continue
        assert p["datasource"] == ref, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"] == ref and t["expr"].strip()
    for v in DASHBOARD["templating"]["list"]:
        assert v["datasource"] == ref


def test_dashboard_covers_what_operators_watch() -> None:
    titles = {p["title"] for p in panels()}
    wanted = {
        "Records/s per exchange", "Records/s per exchange and channel", "Publish lag",
        "Reconnects", "Trade-id gaps", "Book resyncs", "Spool size", "Consumer group lag",
        "Consumer lag", "Redis memory", "Archivers writable", "Archive lag", "Archive writes",
    }  # fmt: skip
    assert wanted <= titles, wanted - titles


# -- metric names and labels against the code --------------------------------------------------


def known_labels(metric: str, exported: Exported) -> frozenset[str] | None:
    for source in (exported.labels, REDIS_EXPORTER_METRICS, PROMETHEUS_SERIES, PROPOSED_METRICS):
        if metric in source:
            return source[metric] | TARGET_LABELS
    return None


@pytest.mark.parametrize(("where", "expr"), [pytest.param(w, e, id=w) for w, e in all_exprs()])
def test_every_queried_metric_and_label_exists(where: str, expr: str, exported: Exported) -> None:
    q = read_promql(expr)
    assert q.metrics, f"{where}: no metric in {expr!r}"
    available: set[str] = set(q.created) | TARGET_LABELS
    for metric, matchers in q.metrics.items():
        labels = known_labels(metric, exported)
        assert labels is not None, f"{where}: {metric} is exported by nothing we run"
        available |= labels
        for m in matchers:
            assert m.label in labels, f"{where}: {metric} has no label {m.label!r}"
            if m.op == "=" and m.label in ENUMERATED_VALUES:
                assert m.value in ENUMERATED_VALUES[m.label], f"{where}: {m}"
            if m.op == "=" and m.label == "job":
                assert m.value in job_names(), f"{where}: no scrape job {m.value!r}"
    for label in q.grouping | q.sources:
        assert label in available, f"{where}: no metric here has the label {label!r}"


@pytest.mark.parametrize(
    ("where", "expr", "label"), [pytest.param(*q, id=q[0]) for q in template_queries()]
)
def test_template_variables_read_existing_labels(
    where: str, expr: str, label: str, exported: Exported
) -> None:
    for metric in read_promql(expr).metrics:
        labels = known_labels(metric, exported)
        assert labels is not None and label in labels, f"{where}: {metric} has no {label!r}"


def test_proposed_metrics_are_missing_and_panels_say_so(exported: Exported) -> None:
    for name in PROPOSED_METRICS:
        assert name not in exported.labels, f"{name} is exported now: move it out of PROPOSED"
    used = {m for _, e in dashboard_exprs() for m in read_promql(e).metrics}
    assert set(PROPOSED_METRICS) <= used  # nothing stale listed
    for p in panels():
        for t in p.get("targets", []):
            for m in read_promql(t["expr"]).metrics:
                if m in PROPOSED_METRICS:
                    assert m in p["description"] and "proposed" in p["description"]
    for r in alert_rules():  # an alert on a metric nobody exports would never fire
        assert not set(read_promql(r["expr"]).metrics) & set(PROPOSED_METRICS), r["alert"]


def test_the_registry_read_sees_the_archiver_metrics(exported: Exported) -> None:
    assert exported.families["marketbus_archive_rows"] == "counter"
    assert exported.labels["marketbus_archive_rows_total"] == set()
    for gauge in ("writable", "lag_max_entries", "stream_maxlen", "last_commit_age_seconds"):
        assert exported.families[f"marketbus_archive_{gauge}"] == "gauge", gauge


def test_the_registry_read_sees_the_publisher_metrics(exported: Exported) -> None:
    # the fixture is the source of truth above: prove it reads what /metrics serves
    assert exported.families["marketbus_records"] == "counter"
    assert exported.labels["marketbus_records_total"] == {"exchange"}
    assert exported.labels["marketbus_state"] == {"exchange", "state"}
    assert exported.labels["marketbus_subscribed_markets"] == {"exchange", "channel"}
    assert "marketbus_publish_lag_ms" in exported.labels
    assert "marketbus_records" not in exported.labels  # counters are queried as *_total


@pytest.mark.parametrize(
    ("expr", "metrics", "grouping"),
    [
        ('sum by (exchange) (rate(marketbus_records_total{exchange=~"$x"}[$__rate_interval]))',
         {"marketbus_records_total": [Matcher("exchange", "=~", "$x")]}, {"exchange"}),
        ("topk(10, max by (stream) (redis_stream_length))", {"redis_stream_length": []},
         {"stream"}),
        ('(a_total / b > 0.9) and on (instance) (b > 1e3)', {"a_total": [], "b": []},
         {"instance"}),
        ("max_over_time(lag_ms[5m:1m] offset 1h) * 2", {"lag_ms": []}, set()),
        ('up{job="x",instance!="y"} == 0 unless ignoring(job) foo_total',
         {"up": [Matcher("job", "=", "x"), Matcher("instance", "!=", "y")], "foo_total": []},
         {"job"}),
    ],
)  # fmt: skip
def test_the_promql_reader(
    expr: str, metrics: dict[str, list[Matcher]], grouping: set[str]
) -> None:
    q = read_promql(expr)
    assert q.metrics == metrics
    assert q.grouping == grouping


def test_the_promql_reader_finds_label_replace_labels_and_refuses_what_it_cannot_read() -> None:
    q = read_promql('label_replace(rate(s_total[1m]), "dst", "$1", "src", "(.*)")')
    assert (q.metrics, q.created, q.sources) == ({"s_total": []}, {"dst"}, {"src"})
    with pytest.raises(ValueError, match="metric name"):
        read_promql('{__name__="x"}')
    with pytest.raises(ValueError, match="cannot read"):
        read_promql("sum(x) # y")


def test_a_misspelt_metric_or_label_would_fail(exported: Exported) -> None:
    assert known_labels("marketbus_record_total", exported) is None
    labels = known_labels("marketbus_records_total", exported)
    assert labels is not None and "channel" not in labels


def test_the_channel_panel_splits_real_stream_keys() -> None:
    """The label_replace regexes of the per-channel panel, on keys built by marketbus.keys."""
    (expr,) = [e for w, e in dashboard_exprs() if "redis_stream_entries_added_total" in w + e]
    regexes = dict(re.findall(r'"(exchange|channel)", "\$1", "stream", "((?:[^"\\]|\\.)*)"', expr))
    assert set(regexes) == {"exchange", "channel"}
    for exchange, symbol, channel in [
        ("binance", "BTC/USDT", Channel.TRADES),
        ("okx", "ETH-USDT-SWAP", Channel.BOOK),
        ("kraken", "XBT/EUR", Channel.CANDLES),
    ]:
        key = stream_key(exchange, symbol, channel)
        ex = re.fullmatch(regexes["exchange"], key)  # PromQL anchors label_replace regexes
        ch = re.fullmatch(regexes["channel"], key)
        assert ex and ex.group(1) == exchange
        assert ch and ch.group(1) == channel.value


# -- docs --------------------------------------------------------------------------------------


def test_operations_doc_describes_every_panel_and_alert() -> None:
    doc = OPERATIONS_DOC.read_text()
    for p in panels():
        assert f"### {p['title']}" in doc, f"docs/operations.md lacks panel {p['title']!r}"
    for r in alert_rules():
        assert f"`{r['alert']}`" in doc, f"docs/operations.md lacks alert {r['alert']}"
    for name in PROPOSED_METRICS:
        assert name in doc
    assert "docs/operations.md" in (ROOT / "README.md").read_text()
