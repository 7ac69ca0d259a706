"""docker-compose.yml and the Dockerfile agree with the CLI and the settings (no Docker here)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml

from marketbus.settings import Settings, load_settings
from marketbus_cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES: dict[str, Any] = COMPOSE["services"]


def publishers() -> list[str]:
    return [n for n, s in SERVICES.items() if "publish" in (s.get("command") or [])]


def archivers() -> list[str]:
    """Services running ``marketbus archive`` (the archiver itself, not a subcommand)."""
    out = []
    for n, s in SERVICES.items():
        cmd = s.get("command") or []
        if cmd[:1] == ["archive"] and not {"compact", "prune", "status"} & set(cmd):
            out.append(n)
    return out


def bind_sources(service: str) -> dict[str, Path]:
    """Container path -> repo file of each ``./path:/container/path:ro`` volume."""
    out: dict[str, Path] = {}
    for v in SERVICES[service].get("volumes", []):
        host, container, *_ = v.split(":")
        if host.startswith("./"):
            out[container] = ROOT / host
    return out


def service_config(service: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings ``marketbus archive --config FILE`` loads in the service: the mounted
    repo file, then the service's environment."""
    for k in list(os.environ):
        if k.startswith("MARKETBUS_"):
            monkeypatch.delenv(k)
    monkeypatch.delenv("REDIS_URL", raising=False)
    for k, v in SERVICES[service].get("environment", {}).items():
        monkeypatch.setenv(k, str(v))
    params = parse_cli(SERVICES[service]["command"])
    config = params["config"]
    mounts = bind_sources(service)
    assert str(config) in mounts, f"{service}: --config {config} is not a file of the repo"
    return load_settings(mounts[str(config)])


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage."""
    joined = DOCKERFILE.replace("\\\n", " ")  # continuation lines are one instruction
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
    out: list[tuple[str, str]] = []
    for ln in lines:
        word, _, rest = ln.partition(" ")
        if word.upper() == "FROM":
            out = []  # a new stage
        out.append((word.upper(), rest.strip()))
    return out


def parse_cli(argv: list[str]) -> dict[str, Any]:
    """Parse ``marketbus <argv>`` with the real click command (nothing runs): unknown options fail."""
    group = typer.main.get_command(app)
    name, *args = argv
    assert name in group.commands, f"marketbus has no command {name!r}"  # type: ignore[attr-defined]
    cmd = group.commands[name]  # type: ignore[attr-defined]
    ctx = cmd.make_context(name, list(args))
    params: dict[str, Any] = ctx.params
    return params


def entrypoint() -> list[str]:
    ep = dict(dockerfile_instructions())["ENTRYPOINT"]
    parsed: list[str] = yaml.safe_load(ep)
    return parsed


def env_field_exists(name: str) -> bool:
    """Whether ``MARKETBUS_A__B`` names the settings field ``a.b``."""
    model: Any = Settings
    for part in name.removeprefix("MARKETBUS_").lower().split("__"):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_redis_is_persistent_and_health_checked() -> None:
    redis = SERVICES["redis"]
    cmd = " ".join(redis["command"])
    assert re.search(r"--appendonly\s+yes", cmd)
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert redis["healthcheck"]["test"][1:] == ["redis-cli", "ping"]


def test_there_is_a_publisher_and_a_bot() -> None:
    assert publishers(), "no service runs `marketbus publish`"
    assert "bot" in SERVICES


@pytest.mark.parametrize("service", publishers())
def test_publisher_command_parses_with_the_real_cli(service: str) -> None:
    svc = SERVICES[service]
    assert entrypoint() == ["marketbus"]
    params = parse_cli(svc["command"])
    assert service == f"publisher-{params['exchange']}"  # one service per exchange
    # the same validation the publisher runs at start: symbols, channels, exchange
    load_settings(
        exchanges=[{"name": params["exchange"], "symbols": params["symbols"].split(","),
                    "channels": params["channels"].split(",")}],
    )  # fmt: skip
    assert "--redis-password" not in " ".join(svc["command"])  # secrets never in argv


@pytest.mark.parametrize("service", publishers())
def test_publisher_env_are_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = SERVICES[service]["environment"]
    ours = {k: str(v) for k, v in env.items() if k.startswith("MARKETBUS_")}
    assert "MARKETBUS_REDIS__URL" in ours
    for k in ours:
        assert env_field_exists(k), f"{k} is not a marketbus setting"
    for k, v in ours.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("REDIS_URL", raising=False)
    s = load_settings()
    assert s.redis.url == ours["MARKETBUS_REDIS__URL"]
    assert urlsplit(s.redis.url).password is None, "a password goes in MARKETBUS_REDIS__PASSWORD"
    assert "redis://redis:" in s.redis.url  # the compose service name


@pytest.mark.parametrize("service", publishers())
def test_publisher_healthcheck_is_marketbus_health(service: str) -> None:
    svc = SERVICES[service]
    test = svc["healthcheck"]["test"]
    assert test[:3] == ["CMD", "marketbus", "health"]
    params = parse_cli(test[2:])
    assert params["exchange"] == parse_cli(svc["command"])["exchange"]
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"


def test_bot_runs_the_example_against_the_compose_redis() -> None:
    bot = SERVICES["bot"]
    argv = bot.get("entrypoint") or bot["command"]
    assert argv[0] == "python"
    workdir = dict(dockerfile_instructions())["WORKDIR"]
    script = Path(argv[1])
    assert (ROOT / script).is_file()
    copied = [a for i, a in dockerfile_instructions() if i == "COPY" and "examples" in a]
    assert copied and copied[0].split()[-1] == f"{workdir}/examples"
    source = (ROOT / script).read_text()
    for var in bot["environment"]:
        assert var in source, f"the bot does not read {var}"
    assert bot["environment"]["REDIS_URL"].startswith("redis://redis:")
    for market in bot["environment"]["MARKETS"].split(","):
        exchange, _, symbol = market.partition(":")
        assert exchange == "binance" and "/" in symbol
    assert bot["depends_on"]["redis"]["condition"] == "service_healthy"


def test_dockerfile_slim_non_root_installs_the_package() -> None:
    final = dockerfile_instructions()
    base = final[0][1]
    assert re.fullmatch(r"python:3\.11-slim(\S*)?( AS \w+)?", base), base
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    runs = " ".join(a for i, a in final if i == "RUN")
    assert "pip install" in runs
    assert "pip wheel" in DOCKERFILE and "COPY pyproject.toml" in DOCKERFILE
    for pkg in ("marketbus", "publisher", "consumers", "fake_exchange", "marketbus_cli"):
        assert f"COPY {pkg} " in DOCKERFILE, f"the image lacks the {pkg} package"
    assert entrypoint() == ["marketbus"]


def test_the_spread_bot_service_runs_the_example_with_arguments_it_accepts() -> None:
    import importlib.util
    from pathlib import Path

    svc = SERVICES["spread"]
    cmd = svc["entrypoint"]
    assert cmd[:2] == ["python", "examples/spread.py"]
    path = Path(__file__).resolve().parents[2] / "examples" / "spread.py"
    spec = importlib.util.spec_from_file_location("spread_example", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = mod.parse_args(cmd[2:])
    assert args.markets == ["binance:BTC/USDT", "okx:BTC/USDT"]
    assert args.redis_url == "redis://redis:6379/0"
    for market in args.markets:  # one publisher service per exchange it reads
        assert f"publisher-{market.split(':')[0]}" in SERVICES


@pytest.mark.parametrize("service", publishers())
def test_each_publisher_waits_for_its_doctor_pre_flight(service: str) -> None:
    """`marketbus doctor` with the publisher's own markets runs first; exit 2 keeps it down."""
    exchange = parse_cli(SERVICES[service]["command"])["exchange"]
    pre = f"preflight-{exchange}"
    assert SERVICES[service]["depends_on"][pre] == {"condition": "service_completed_successfully"}
    doctor = parse_cli(SERVICES[pre]["command"])  # parses with the real CLI: valid flags
    assert SERVICES[pre]["command"][0] == "doctor"
    publish = parse_cli(SERVICES[service]["command"])
    for key in ("exchange", "symbols", "channels"):
        assert doctor[key] == publish[key], key
    assert (
        SERVICES[pre]["environment"]["MARKETBUS_REDIS__URL"]
        == (SERVICES[service]["environment"]["MARKETBUS_REDIS__URL"])
    )
    assert SERVICES[pre]["restart"] == "no"


def test_there_is_an_archiver() -> None:
    assert archivers() == ["archive"]


@pytest.mark.parametrize("service", archivers())
def test_the_archiver_writes_to_a_named_volume_and_reads_the_compose_redis(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archive.config import from_settings

    svc = SERVICES[service]
    s = service_config(service, monkeypatch)
    assert urlsplit(s.redis.url).hostname == "redis" and urlsplit(s.redis.url).password is None
    assert s.archive.dir is not None
    named = {
        container: host
        for host, container, *_ in (v.split(":") for v in svc["volumes"])
        if not host.startswith((".", "/"))
    }
    mount = [c for c in named if Path(s.archive.dir).is_relative_to(c)]
    assert mount, f"{s.archive.dir} is on no named volume: the archive would die with the container"
    assert named[mount[0]] in COMPOSE["volumes"]
    config = from_settings(s.archive)  # valid, as the archiver will build it at start
    assert config.name != "" and s.archive.name is not None, "a fixed consumer name (not the host)"
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert svc["restart"] == "unless-stopped"
    assert "--redis-password" not in " ".join(svc["command"])


@pytest.mark.parametrize("service", archivers())
def test_the_archiver_has_time_to_commit_what_it_holds_at_stop(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker stop sends SIGTERM, then SIGKILL after stop_grace_period (10 s by default):
    the archiver's last commit may be retried for stop_timeout_s, after its read loop stops."""
    from archive.config import from_settings

    config = from_settings(service_config(service, monkeypatch).archive)
    grace = SERVICES[service]["stop_grace_period"]
    m = re.fullmatch(r"(\d+)s", grace)
    assert m, f"stop_grace_period {grace!r}: give it in seconds"
    assert int(m.group(1)) >= config.stop_timeout_s + 15


@pytest.mark.parametrize("service", archivers())
def test_the_archiver_healthcheck_is_its_status(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = SERVICES[service]
    test = svc["healthcheck"]["test"]
    assert test[:4] == ["CMD", "marketbus", "archive", "status"]
    params = parse_subcommand(test[2:])
    assert params["config"] == parse_cli(svc["command"])["config"]
    assert params["name"] == service_config(service, monkeypatch).archive.name


def parse_subcommand(argv: list[str]) -> dict[str, Any]:
    """``archive status ...`` parsed by the real click group and subcommand."""
    group = typer.main.get_command(app)
    name, sub, *args = argv
    cmd = group.commands[name].commands[sub]  # type: ignore[attr-defined]
    params: dict[str, Any] = cmd.make_context(sub, list(args)).params
    return params


def test_the_image_holds_what_the_archive_service_runs() -> None:
    """The archive package is copied into the build, and the volume's mount point exists in
    the image, owned by the image's user: Docker gives a new named volume the owner of the
    directory it is mounted on (else root, and the archiver, not root, cannot write)."""
    assert "COPY archive " in DOCKERFILE, "the image lacks the archive package"
    final = " ".join(a for i, a in dockerfile_instructions() if i == "RUN")
    mounts = {c for s in archivers() for h, c, *_ in (v.split(":") for v in SERVICES[s]["volumes"])
              if not h.startswith((".", "/"))}  # fmt: skip
    for mount in mounts:
        assert re.search(rf"(install -d|mkdir)\b[^&]*{re.escape(mount)}\b", final), mount
        assert re.search(
            rf"chown\b[^&]*{re.escape(mount)}|install -d -o \w+[^&]*{re.escape(mount)}", final
        )
