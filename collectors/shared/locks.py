"""A Redis lock with a token and a TTL: single flight for runs that must not overlap (flush, REST drain).

Only its holder can renew or release it (compare-and-set in Lua), and a holder that died releases it by
expiring, so a killed worker holds the others up for at most the TTL.
"""

from __future__ import annotations

import logging
import secrets

from redis import Redis, RedisError

logger = logging.getLogger(__name__)

# KEYS[1] = lock; ARGV[1] = token.
_RELEASE_LUA = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
"""
# KEYS[1] = lock; ARGV[1] = token, ARGV[2] = ttl in ms.
_RENEW_LUA = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end
return 0
"""


class LockLost(RuntimeError):
    """The lock expired or was taken over during the run."""


class RedisLock:
    def __init__(self, redis: Redis, key: str, ttl_ms: int) -> None:
        self._redis = redis
        self._key = key
        self._ttl_ms = ttl_ms
        self._token = secrets.token_hex(16)

    def acquire(self) -> bool:
        return bool(self._redis.set(self._key, self._token, nx=True, px=self._ttl_ms))

    def renew(self) -> None:
        """Extend the lock by a full TTL, or raise LockLost if it is no longer ours."""
        if not self._redis.register_script(_RENEW_LUA)(keys=[self._key], args=[self._token, self._ttl_ms]):
            raise LockLost(f"lock {self._key} expired or was taken over during the run")

    def release(self) -> None:
        # Best effort: when Redis is down the lock expires on its own, and the run's own error must not be
        # replaced by this one.
        try:
            self._redis.register_script(_RELEASE_LUA)(keys=[self._key], args=[self._token])
        except RedisError as exc:
            logger.warning("lock %s not released (it expires in %d ms): %s", self._key, self._ttl_ms, exc)
