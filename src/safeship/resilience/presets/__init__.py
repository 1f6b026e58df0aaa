"""Ready-made resilience for the dependencies services call most.

Each preset is its own module, importing its library only when used:

* :mod:`safeship.resilience.presets.http` — httpx transports (sync and async) applying a
  breaker, retries and a timeout per host;
* :mod:`safeship.resilience.presets.cache` — a Redis cache that degrades to a miss while
  Redis is failing;
* :mod:`safeship.resilience.presets.failover` — primary → secondary → local fallback,
  each provider behind its own breaker, with per-provider metrics;
* :mod:`safeship.resilience.presets.db` — rerun a whole database transaction on
  serialization failure or deadlock (SQLSTATE 40001 / 40P01).
"""
