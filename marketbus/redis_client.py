"""One way to open Redis for publishers, consumers and the CLI: standalone or cluster, TLS.

Responses stay bytes (``decode_responses=False``): the codec reads binary msgpack.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from marketbus.errors import FatalError, MarketbusError, RedisAuthError, RedisUnavailableError
from marketbus.settings import RedisSettings

AnyRedis = aioredis.Redis | RedisCluster


def connect(settings: RedisSettings, **kwargs: Any) -> Any:
    """A redis-py asyncio client (not yet connected: the first command connects)."""
    opts: dict[str, Any] = {
        "decode_responses": False,
        "socket_connect_timeout": 5,
        "health_check_interval": 15,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 2),
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
    if isinstance(e, rex.ConnectionError | rex.TimeoutError | OSError | TimeoutError):
        return RedisUnavailableError(text)
    if isinstance(e, rex.BusyLoadingError | rex.TryAgainError | rex.ClusterDownError):
        return RedisUnavailableError(text)
    return FatalError(text)
