"""The jobs' PostgreSQL statements, each a template over its placeholders ``{0}``, ``{1}``...
rendered for asyncpg (``$1``), psycopg (``%s``) or SQLAlchemy (``:p0``)."""

from __future__ import annotations

import re

__all__ = ["CLAIM", "CLAIM_ONE", "FINISH", "RETRY", "render"]

_RETURNING = (
    "RETURNING j.id, j.task, j.queue, j.args::text, j.attempts, j.max_attempts, j.crashes, "
    "j.token, j.created_at"
)
# {0} queues, {1} limit, {2} lease seconds, {3} worker.  With one queue ({0} a text) the
# batch is read off ix_safeship_jobs_claim in its order; several queues (``= ANY``) sort.
_CLAIM = f"""
WITH c AS (
  SELECT id FROM safeship_jobs
  WHERE state = 'pending' AND queue {{{{match}}}} AND run_at <= now()
  ORDER BY priority DESC, run_at, id
  LIMIT {{1}} FOR UPDATE SKIP LOCKED)
UPDATE safeship_jobs j
SET state = 'running', token = j.token + 1, attempts = j.attempts + 1, started_at = now(),
    lease_until = now() + {{2}} * interval '1 second', worker = {{3}}, cancel_requested = false
FROM c WHERE j.id = c.id
{_RETURNING}
"""  # noqa: S608 - constant SQL
CLAIM = _CLAIM.replace("{{match}}", "= ANY({0})")
CLAIM_ONE = _CLAIM.replace("{{match}}", "= {0}")
_HISTORY = (
    "id, task, queue, args, priority, attempts, max_attempts, crashes, unique_key, errors, "
    "progress, created_at, started_at, state, result, finished_at, expires_at"
)
# {0} ids, {1} tokens, {2} states, {3} results, {4} errors, {5} counts, {6} crash, {7} ttls
FINISH = f"""
WITH u AS (
  SELECT * FROM unnest({{0}}, {{1}}, {{2}}, {{3}}, {{4}}, {{5}}, {{6}}, {{7}})
    AS u(id, token, state, result, err, counts, crash, ttl)),
d AS (
  DELETE FROM safeship_jobs j USING u
  WHERE j.id = u.id AND j.token = u.token AND j.state = 'running'
  RETURNING j.*, u.state AS new_state, u.result AS new_result, u.err, u.counts, u.crash, u.ttl)
INSERT INTO safeship_jobs_history ({_HISTORY})
SELECT id, task, queue, args, priority, attempts - CASE WHEN counts THEN 0 ELSE 1 END,
       max_attempts, crashes + CASE WHEN crash THEN 1 ELSE 0 END, unique_key,
       CASE WHEN err IS NULL THEN errors
            ELSE coalesce(errors, '[]'::jsonb) || jsonb_build_array(err::jsonb) END,
       progress, created_at, started_at, new_state, new_result::jsonb, now(),
       now() + ttl * interval '1 second'
FROM d
RETURNING id
"""  # noqa: S608 - constant SQL
# {0} ids, {1} tokens, {2} states, {3} delays, {4} errors, {5} counts, {6} crash
RETRY = """
UPDATE safeship_jobs j
SET state = u.state, run_at = now() + u.delay * interval '1 second', token = j.token + 1,
    attempts = j.attempts - CASE WHEN u.counts THEN 0 ELSE 1 END,
    crashes = j.crashes + CASE WHEN u.crash THEN 1 ELSE 0 END,
    errors = CASE WHEN u.err IS NULL THEN j.errors
             ELSE coalesce(j.errors, '[]'::jsonb) || jsonb_build_array(u.err::jsonb) END,
    lease_until = NULL, worker = NULL
FROM unnest({0}, {1}, {2}, {3}, {4}, {5}, {6}) AS u(id, token, state, delay, err, counts, crash)
WHERE j.id = u.id AND j.token = u.token AND j.state = 'running'
RETURNING j.id
"""
FINISH_TYPES = ("uuid[]", "bigint[]", "text[]", "text[]", "text[]", "bool[]", "bool[]", "float8[]")
RETRY_TYPES = ("uuid[]", "bigint[]", "text[]", "float8[]", "text[]", "bool[]", "bool[]")
EXPIRED = """
SELECT id, task, token, attempts, crashes FROM safeship_jobs
WHERE state = 'running' AND lease_until < now()
ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED
"""
BEAT = """
UPDATE safeship_jobs j
SET lease_until = now() + %s * interval '1 second', progress = coalesce(u.p::jsonb, j.progress)
FROM unnest(%s::uuid[], %s::bigint[], %s::text[]) AS u(id, token, p)
WHERE j.id = u.id AND j.token = u.token AND j.state = 'running'
RETURNING j.id, j.cancel_requested
"""
PRUNE = """
DELETE FROM safeship_jobs_history WHERE id IN (
  SELECT id FROM safeship_jobs_history WHERE expires_at < now() LIMIT 5000)
"""
SET_LIMIT = """
INSERT INTO safeship_jobs_queues (queue, concurrency, rate_limit, rate_period)
VALUES ($1, $2, $3, $4)
ON CONFLICT (queue) DO UPDATE SET concurrency = EXCLUDED.concurrency,
  rate_limit = EXCLUDED.rate_limit, rate_period = EXCLUDED.rate_period
"""
# A rate-limited queue's window, aligned to multiples of its period on the database's
# clock: moved on (count back to 0) when a new one began.  The row stays locked until the
# claim's transaction commits, so claims of the queue across the fleet take turns.
# Returns the concurrency, the starts left in this window and the seconds until the next.
WINDOW = """
WITH w AS (
  SELECT queue, to_timestamp(floor(extract(epoch FROM now()) / rate_period) * rate_period) AS win
  FROM safeship_jobs_queues WHERE queue = $1 AND rate_limit IS NOT NULL)
UPDATE safeship_jobs_queues q SET window_start = w.win,
  window_count = CASE WHEN q.window_start = w.win THEN q.window_count ELSE 0 END
FROM w WHERE q.queue = w.queue
RETURNING q.concurrency, q.rate_limit - q.window_count,
  extract(epoch FROM w.win - now())::float8 + q.rate_period
"""
COUNT_STARTS = "UPDATE safeship_jobs_queues SET window_count = window_count + $2 WHERE queue = $1"
LOCK_QUEUE = "SELECT concurrency FROM safeship_jobs_queues WHERE queue = $1 FOR UPDATE"
RUNNING = "SELECT count(*) FROM safeship_jobs WHERE queue = $1 AND state = 'running'"
CHANNEL = "safeship_jobs"


def render(template: str, style: str, types: tuple[str, ...] = ()) -> str:
    """``template`` with placeholders for ``style`` (asyncpg, psycopg or sa), each cast to
    its type from ``types`` when given."""
    count = max(int(n) for n in re.findall(r"\{(\d+)\}", template)) + 1
    marks = []
    for i in range(count):
        mark = {"asyncpg": f"${i + 1}", "psycopg": "%s", "sa": f":p{i}"}[style]
        marks.append(f"CAST({mark} AS {types[i]})" if i < len(types) else mark)
    return template.format(*marks)
