"""The Redis Streams queue of the scaled-out mode: one stream, one consumer group.

Each entry is a stream entry with one field, ``execution_id``. A claim is a delivery to a
consumer of the group, so the entry stays in the group's pending entries list (PEL) until it
is acknowledged. The lease is the entry's idle time in the PEL. ``renew`` resets it, and the
next ``claim`` of any consumer takes an entry idle longer than ``lease`` (XAUTOCLAIM).
``QueueEntry.deliveries`` is the PEL's delivery counter, which XREADGROUP sets to 1 and each
XAUTOCLAIM increments.

Every command that reads an entry's owner and then changes the entry runs in one Lua script,
so a reclaim by another consumer can never fall between the ownership check and the change.
Needs Redis 6.2 or later (XAUTOCLAIM). Acknowledged state survives a restart of Redis only
when Redis persists every write (``appendonly yes`` with ``appendfsync always``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from splice.errors import OperatorError
from splice.queue import Queue, QueueEntry

logger = logging.getLogger(__name__)

T = TypeVar("T")

EXECUTION_FIELD = "execution_id"

# The consumer that owns released entries until the next claim takes them. A released entry
# gets a delivery time of 0 (1970), so it is idle past any lease. It no longer belongs to the
# consumer that released it, so that consumer's later renew or ack of it is a no-op.
RELEASED_CONSUMER = "splice:released"

# Keys: the stream. Arguments: group, consumer, min idle time (ms), limit. Returns
# {id, fields, deliveries} for each entry taken. XAUTOCLAIM scans at most 10 * COUNT PEL
# entries per call, so the loop follows its cursor through the whole PEL. XAUTOCLAIM does not
# return the delivery counter, so XPENDING reads it in the same script.
RECLAIM_SCRIPT = """
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local min_idle, limit = ARGV[3], tonumber(ARGV[4])
local claimed = {}
local cursor = '0-0'
repeat
  local reply = redis.call('XAUTOCLAIM', stream, group, consumer, min_idle, cursor,
                           'COUNT', limit - #claimed)
  cursor = reply[1]
  for _, entry in ipairs(reply[2]) do
    -- Redis 7 leaves out entries deleted from the stream. NOTE: Redis 6.2 is believed to
    -- return nil in their place, which this skips, but that path has not been run.
    if entry then
      local pending = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
      claimed[#claimed + 1] = {entry[1], entry[2], pending[1][4]}
    end
  end
until cursor == '0-0' or #claimed >= limit
return claimed
"""

# Keys: the stream. Arguments: group, consumer, entry ids. Resets the idle time of each entry the
# consumer still owns (XCLAIM with JUSTID leaves the delivery counter alone) and returns their
# ids.
RENEW_SCRIPT = """
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local renewed = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
    renewed[#renewed + 1] = id
  end
end
return renewed
"""

# Keys: the stream. Arguments: group, consumer, entry id, action ('ack' or 'release'), the
# placeholder consumer. Returns {1, consumer} when done. Otherwise it returns
# {0, current owner}, with '' as the owner of an entry that is no longer pending.
SETTLE_SCRIPT = """
local stream, group, consumer, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local pending = redis.call('XPENDING', stream, group, id, id, 1)
if not pending[1] then
  return {0, ''}
end
if pending[1][2] ~= consumer then
  return {0, pending[1][2]}
end
if ARGV[4] == 'ack' then
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
else
  redis.call('XCLAIM', stream, group, ARGV[5], 0, id, 'TIME', 0, 'JUSTID')
end
return {1, consumer}
"""


class QueueUnavailable(OperatorError):
    """The queue's Redis server could not be reached, or is still loading its data."""

    def __init__(self, operation: str, url: str, error: Exception) -> None:
        self.operation = operation
        self.url = url  # without its password
        super().__init__(
            f"queue {operation} failed: Redis at {url} is unavailable ({error}); "
            "check that the server is running and reachable (workers retry on their own)"
        )


def redact_url(url: str) -> str:
    """Return ``url`` with its password, in the user info or the query, replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = netloc.rpartition("@")[2]
        netloc = f"{parts.username or ''}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class RedisQueue:
    """The Queue interface on a Redis stream read by one consumer group.

    ``lease`` is in seconds. ``socket_timeout`` (seconds) bounds every command, so a claim
    that waits longer blocks in several shorter XREADGROUP calls. Safe to share between
    threads, because redis-py's connection pool gives each command its own connection.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = "splice:executions",
        group: str = "workers",
        lease: float = 30.0,
        socket_timeout: float = 10.0,
    ) -> None:
        if lease <= 0:
            raise ValueError(f"lease must be positive seconds, got {lease!r}")
        if socket_timeout <= 0:
            raise ValueError(f"socket_timeout must be positive seconds, got {socket_timeout!r}")
        self.url = redact_url(url)
        self.stream = stream
        self.group = group
        self.lease = lease
        self._lease_ms = max(1, round(lease * 1000))
        # Each blocking read ends well within the socket timeout, and within one lease so
        # that a long wait still takes entries whose lease expires meanwhile.
        self._max_block = min(lease, socket_timeout / 2)
        # redis-py 6.4 retries a failed command 3 times with backoff of up to 10 s by default.
        # One immediate retry is enough to replace a connection that Redis closed when it
        # restarted, and anything longer belongs to the worker, which retries on
        # QueueUnavailable. NOTE: a retried XADD whose first attempt reached Redis adds the
        # entry twice, which at-least-once delivery already allows.
        self._client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._reclaim_script = self._client.register_script(RECLAIM_SCRIPT)
        self._renew_script = self._client.register_script(RENEW_SCRIPT)
        self._settle_script = self._client.register_script(SETTLE_SCRIPT)
        self._group_ready = False

    def ping(self) -> None:
        """Raise QueueUnavailable unless Redis replies to PING (for readiness checks)."""
        try:
            self._client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise QueueUnavailable("ping", self.url, error) from error

    def enqueue(self, execution_id: str) -> str:
        """Add an entry for the execution (XADD); return the entry's stream id."""
        if not execution_id:
            raise ValueError("execution_id must not be empty")
        return self._run(
            "enqueue",
            lambda: str(self._client.xadd(self.stream, {EXECUTION_FIELD: execution_id})),
        )

    def claim(self, consumer: str, *, limit: int = 1, wait: float = 0.0) -> list[QueueEntry]:
        """Lease up to ``limit`` entries to ``consumer``, expired leases first, then new entries.

        Waits up to ``wait`` seconds when none is available.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        if consumer == RELEASED_CONSUMER:
            raise ValueError(f"consumer name {consumer!r} is reserved for released entries")

        deadline = time.monotonic() + wait
        while True:
            entries = self._run("claim", self._reclaim, consumer, limit)
            remaining = deadline - time.monotonic()
            if entries or remaining <= 0:
                block_ms = None  # XREADGROUP without BLOCK returns at once
            else:
                block_ms = max(1, round(min(remaining, self._max_block) * 1000))
            count = limit - len(entries)
            if count > 0:
                entries += self._run("claim", self._read_new, consumer, count, block_ms)
            if entries or time.monotonic() >= deadline:
                return entries

    def renew(self, consumer: str, entries: Sequence[QueueEntry]) -> list[QueueEntry]:
        """Reset the lease of each entry ``consumer`` still owns; return those entries."""
        if not entries:
            return []
        ids = [entry.entry_id for entry in entries]
        renewed = set(
            self._run(
                "renew",
                lambda: self._renew_script(keys=[self.stream], args=[self.group, consumer, *ids]),
            )
        )
        return [entry for entry in entries if entry.entry_id in renewed]

    def ack(self, consumer: str, entry: QueueEntry) -> None:
        """Acknowledge and delete a finished entry (XACK, XDEL) if ``consumer`` still owns it.

        Logs a warning and changes nothing when another consumer has claimed it since.
        """
        self._settle("ack", consumer, entry)

    def release(self, consumer: str, entry: QueueEntry) -> None:
        """Give an owned entry back, so that the next claim of any consumer takes it.

        The entry moves to the placeholder consumer ``RELEASED_CONSUMER`` with a delivery
        time of 0, which makes it idle past any lease. Its next claim counts one more delivery.
        """
        self._settle("release", consumer, entry)

    def close(self) -> None:
        self._client.close()

    def _settle(self, action: str, consumer: str, entry: QueueEntry) -> None:
        done, owner = self._run(
            action,
            lambda: self._settle_script(
                keys=[self.stream],
                args=[self.group, consumer, entry.entry_id, action, RELEASED_CONSUMER],
            ),
        )
        if done:
            return
        state = f"is now owned by {owner}" if owner else "is no longer pending"
        logger.warning(
            "queue %s of entry %s (execution %s) by consumer %s skipped: the entry %s "
            "because the lease expired, so another consumer may run the execution again",
            action,
            entry.entry_id,
            entry.execution_id,
            consumer,
            state,
        )

    def _reclaim(self, consumer: str, limit: int) -> list[QueueEntry]:
        reply = self._reclaim_script(
            keys=[self.stream], args=[self.group, consumer, self._lease_ms, limit]
        )
        entries = []
        for entry_id, flat_fields, deliveries in reply:
            fields = dict(zip(flat_fields[::2], flat_fields[1::2], strict=True))
            entry = self._to_entry(consumer, entry_id, fields, int(deliveries))
            if entry is not None:
                entries.append(entry)
        return entries

    def _read_new(self, consumer: str, count: int, block_ms: int | None) -> list[QueueEntry]:
        reply: Any = self._client.xreadgroup(
            self.group, consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        # RESP2 gives [[stream, [(id, fields), ...]]], RESP3 gives {stream: [...]}.
        streams = reply.items() if isinstance(reply, dict) else (reply or [])
        entries = []
        for _stream, messages in streams:
            for entry_id, fields in messages:
                entry = self._to_entry(consumer, entry_id, fields or {}, 1)
                if entry is not None:
                    entries.append(entry)
        return entries

    def _to_entry(
        self, consumer: str, entry_id: str, fields: dict[str, str], deliveries: int
    ) -> QueueEntry | None:
        execution_id = fields.get(EXECUTION_FIELD)
        if execution_id:
            return QueueEntry(entry_id=entry_id, execution_id=execution_id, deliveries=deliveries)
        # Splice never writes such an entry. Acknowledging it (without deleting it, so it can
        # still be inspected) stops every worker from claiming it again forever.
        logger.error(
            "queue entry %s in stream %s has no %s field (fields: %s); "
            "acknowledged it without running anything",
            entry_id,
            self.stream,
            EXECUTION_FIELD,
            sorted(fields),
        )
        self._client.xack(self.stream, self.group, entry_id)
        return None

    def _run(self, operation: str, command: Callable[..., T], *args: Any) -> T:
        """Run ``command`` once the group exists; raise QueueUnavailable on connection errors."""
        try:
            if not self._group_ready:
                self._create_group()
            try:
                return command(*args)
            except redis.ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                # The stream or group vanished after this object created it: Redis restarted
                # without its data, or someone deleted the key. Pending leases are lost then.
                logger.warning(
                    "queue stream %s or group %s is missing on Redis at %s; creating it again",
                    self.stream,
                    self.group,
                    self.url,
                )
                self._create_group()
                return command(*args)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise QueueUnavailable(operation, self.url, error) from error

    def _create_group(self) -> None:
        # Id 0 makes entries added before the group existed deliverable too.
        try:
            self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True


if TYPE_CHECKING:
    # Lets mypy check that RedisQueue satisfies the Queue protocol.
    _queue: Queue = RedisQueue("redis://127.0.0.1:6379/0")
