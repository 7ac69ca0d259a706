"""One way to open Redis for publishers, consumers and the CLI: standalone or cluster, TLS.

Responses stay bytes (``decode_responses=False``): the codec reads binary msgpack.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff

from marketbus.errors import FatalError, MarketbusError, RedisAuthError, RedisUnavailableError
from marketbus.settings import RedisSettings

AnyRedis = aioredis.Redis | RedisCluster


def retry_policy(retries: int) -> Retry:
    """redis-py's own retry of a failed command, as the asyncio client needs it.

    The asyncio client must get ``redis.asyncio.retry.Retry``: since redis-py 8.2 a
    synchronous ``redis.retry.Retry`` is converted with a warning (an error under our test
    settings), and before that it was silently the wrong type. Callers say how many retries,
    never which class, so the two cannot be mixed up again.
    """
    if retries <= 0:
        return Retry(NoBackoff(), 0)
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries)


def connect(settings: RedisSettings, *, retries: int = 2, **kwargs: Any) -> Any:
    """A redis-py asyncio client (not yet connected: the first command connects).

    ``retries=0`` for writers that retry themselves: redis-py would re-send a pipeline whose
    reply was lost, out of the writer's sight.
    """
    if "retry" in kwargs:
        raise TypeError("pass retries=N to connect(); it builds the asyncio Retry itself")
    opts: dict[str, Any] = {
        "decode_responses": False,
        "socket_connect_timeout": 5,
        "health_check_interval": 15,
        "retry": retry_policy(retries),
    }
    password = settings.resolved_password()
    if password is not None:
        opts["password"] = password
    if settings.username is not None:
        opts["username"] = settings.username
    if settings.tls_ca_file is not None:
        opts["ssl_ca_certs"] = str(settings.tls_ca_file)
    opts.update(kwargs)
    if settings.cluster:
        opts.pop("health_check_interval", None)
        return RedisCluster.from_url(settings.url, **opts)
    return aioredis.Redis.from_url(settings.url, **opts)


REFUSALS = (
    "OOM",
    "READONLY",
    "MASTERDOWN",
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MISCONF",
    "NOREPLICAS",
)
"""Error replies with which Redis refuses a write for a while, whatever the record: an
outage (kept in the spool and retried), not a bad record."""


_REFUSAL_TYPES: tuple[type[BaseException], ...] = tuple(
    t
    for t in (
        getattr(rex, name, None)
        for name in (
            "OutOfMemoryError",
            "ReadOnlyError",
            "BusyLoadingError",
            "TryAgainError",
            "ClusterDownError",
            "MasterDownError",
        )
    )
    if isinstance(t, type)
)


def is_refusal(error: BaseException | str) -> bool:
    """Whether Redis' error reply says "not now" (an outage) rather than "not this record".

    redis-py turns known codes into classes and strips the code from the message (OOM ->
    OutOfMemoryError), so both the class and the leading code are checked.
    """
    if isinstance(error, _REFUSAL_TYPES):
        return True
    code = getattr(error, "status_code", None)
    if isinstance(code, str) and code.upper() in REFUSALS:
        return True
    text = str(error).lstrip()
    return text.split(" ", 1)[0].upper() in REFUSALS


def from_redis(e: BaseException) -> MarketbusError:
    """Our error for a redis-py exception."""
    if isinstance(e, MarketbusError):
        return e
    text = f"{type(e).__name__}: {e}"[:500]
    if isinstance(e, rex.AuthenticationError | rex.AuthorizationError | rex.NoPermissionError):
        return RedisAuthError(f"Redis refused our credentials or ACL permissions: {text}")
    if isinstance(e, rex.ResponseError) and any(
        s in str(e) for s in ("WRONGPASS", "NOAUTH", "NOPERM", "invalid password")
    ):
        return RedisAuthError(f"Redis refused our credentials or ACL permissions: {text}")
    if isinstance(e, rex.ResponseError) and is_refusal(e):
        return RedisUnavailableError(f"Redis refuses writes for now: {text}")
    if isinstance(e, rex.ConnectionError | rex.TimeoutError | OSError | TimeoutError):
        return RedisUnavailableError(text)
    if isinstance(e, rex.BusyLoadingError | rex.TryAgainError | rex.ClusterDownError):
        return RedisUnavailableError(text)
    return FatalError(text)
