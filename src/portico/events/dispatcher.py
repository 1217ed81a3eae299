"""The dispatcher: claims due deliveries, signs and sends them, and records what happened.

One runs in each process that delivers (``portico serve`` unless ``events.delivery.enabled`` is
off, and each ``portico serve --role worker``). It claims only as many deliveries as it has room
to send (``max_in_flight``), so a claim never waits in memory long enough to expire; it records
outcomes in batches (one transaction per batch: attempts, deliveries and endpoints), which is
what lets it keep thousands of deliveries a second moving on PostgreSQL. A process killed at any
point loses nothing: a delivery sent but not yet recorded is sent again after its claim expires,
with the same ``webhook-id``.

Endpoints' rate limits and concurrency are the claim's business (the store decides them for every
process, :mod:`portico.events.limits`): what a claim returns is sent at once. A claim that gave
deliveries back says when the first is due again, and the dispatcher looks again then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from portico.config.events import DeliverySettings
from portico.events.endpoints import Endpoints, UnknownEndpoint
from portico.events.metrics import DeliveryMetrics
from portico.events.publishing import Publisher
from portico.events.queue import Claimed, DeliveryQueue, Outcome
from portico.events.sender import Sender
from portico.events.signing import Signer, webhook_headers

__all__ = ["Dispatcher", "next_attempt"]

log = logging.getLogger("portico.events")

ENDPOINT_CACHE_SECONDS = 1.0
"""How long an endpoint's URL and secrets are reused before they are read again: a rotation or a
change reaches every delivering process within about a second."""
FLUSH_SECONDS = 0.02
FLUSH_SIZE = 500
RETRY_AFTER_STATUSES = frozenset({429, 502, 504})
CLAIM_GAP_SECONDS = 0.025
"""The least time between two claims a wake-up starts: publishes that wake the process hundreds
of times a second (every publishing process notifies every delivering process) are claimed
ten or more at a time, not one claim each; a delivery waits 25 ms at most for it. At 10 ms, three
workers on two cores made 300 claims a second of one or two deliveries each at 500 events/s,
and the publishers sharing those cores fell behind (docs/benchmarks.md, issue 12)."""


def next_attempt(
    settings: DeliverySettings, attempts_done: int, retry_after: float | None, status: int | None
) -> float | None:
    """Seconds until the next attempt after ``attempts_done`` failed ones, or ``None`` when that
    was the last (the delivery is dead). 429, 502 and 504 honour ``Retry-After`` (bounded by the
    schedule's longest delay)."""
    schedule = settings.schedule
    if attempts_done >= len(schedule):
        return None
    delay = schedule[attempts_done]
    if settings.jitter:
        delay *= 1 + random.uniform(-settings.jitter, settings.jitter)
    if retry_after is not None and status in RETRY_AFTER_STATUSES:
        delay = min(max(retry_after, 0.0), max(schedule))
    return delay


@dataclass(slots=True)
class _Target:
    url: str
    signers: list[Signer]
    read_at: float


class Dispatcher:
    def __init__(
        self,
        queue: DeliveryQueue,
        endpoints: Endpoints,
        settings: Callable[[], DeliverySettings],
        sender: Sender,
        publisher: Publisher,
        metrics: DeliveryMetrics,
    ) -> None:
        self.queue = queue
        self.endpoints = endpoints
        self.settings = settings
        self.sender = sender
        self.publisher = publisher
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._claimed_at = 0.0
        self._stopping = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._outcomes: list[Outcome] = []
        self._flushed = asyncio.Event()
        self._targets: dict[str, _Target] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._runner = self._loop.create_task(self._run(), name="portico-dispatcher")
        self._writer = self._loop.create_task(self._write(), name="portico-delivery-log")

    def wake(self) -> None:
        """A publish committed: look for due deliveries now (callable from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            if asyncio.get_running_loop() is loop:
                self._wake.set()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(self._wake.set)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, let attempts in flight finish (``grace`` at most), record them."""
        self._stopping = True
        self._wake.set()
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in self._in_flight:
                task.cancel()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._flush()
        await self.sender.close()

    # -- claiming --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            settings = self.settings()
            room = min(settings.max_in_flight - len(self._in_flight), settings.batch_size)
            pause = settings.poll_interval
            # Cleared before the claim, not after it: a publish that commits while the claim
            # runs (too late for it to see) wakes the pause that follows instead of being lost
            # until the next poll. (Without room, a recorded batch wakes it.)
            self._wake.clear()
            if room > 0:
                self._claimed_at = time.monotonic()
                try:
                    claim = await asyncio.to_thread(
                        self.queue.claim, time.time(), room, settings.claim_timeout
                    )
                except Exception as exc:  # the store is away: try again after a pause
                    log.warning("cannot claim deliveries: %s", exc)
                    await self._pause(max(settings.poll_interval, 1.0))
                    continue
                if claim.deliveries:
                    await self._start(claim.deliveries, settings)
                if claim.full:
                    await asyncio.sleep(0)
                    continue
                if claim.next_due is not None:
                    pause = min(pause, max(claim.next_due - time.time(), 0.0))
            await self._pause(pause)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        # Woken early: the wake-ups that come meanwhile are one claim.
        early = self._claimed_at + CLAIM_GAP_SECONDS - time.monotonic()
        if early > 0 and not self._stopping:
            await asyncio.sleep(early)

    async def _start(self, claimed: list[Claimed], settings: DeliverySettings) -> None:
        now = time.time()
        for item in claimed:
            target = await self._target(item.endpoint_id, now)
            if target is None:
                continue  # deleted since: its deliveries were cancelled with it
            task = asyncio.get_running_loop().create_task(self._deliver(item, target, settings))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _target(self, endpoint_id: str, now: float) -> _Target | None:
        target = self._targets.get(endpoint_id)
        if target is not None and now - target.read_at < ENDPOINT_CACHE_SECONDS:
            return target
        try:
            endpoint = await asyncio.to_thread(self.endpoints.get, endpoint_id)
            secrets = await asyncio.to_thread(self.endpoints.signing_secrets, endpoint_id)
        except UnknownEndpoint:
            self._targets.pop(endpoint_id, None)
            return None
        signers = [Signer.from_secret(secret) for secret in secrets]
        if target is None:
            target = self._targets[endpoint_id] = _Target(endpoint.url, signers, now)
        else:
            target.url, target.signers, target.read_at = endpoint.url, signers, now
        return target

    # -- sending ---------------------------------------------------------------------------------

    async def _deliver(self, item: Claimed, target: _Target, settings: DeliverySettings) -> None:
        body = item.payload.encode()
        timestamp = int(time.time())
        headers = webhook_headers(item.event_id, timestamp, body, target.signers)
        headers.append(("content-type", "application/json"))
        started = time.time()
        if item.attempts == 0:
            self.metrics.first_attempt(started - item.published_at)
        result = await self.sender.send(target.url, headers, body, settings.timeout)
        status = result.status
        if status is not None and 200 <= status < 300:
            kind, due = "succeeded", None
        elif status == 410:
            kind, due = "disabled", None
        else:
            delay = next_attempt(settings, item.attempts + 1, result.retry_after, status)
            kind, due = ("dead", None) if delay is None else ("retrying", started + delay)
        self.metrics.attempt(kind, result.error, status)
        self._outcomes.append(
            Outcome(
                claimed=item,
                at=started,
                latency=result.latency,
                status=status,
                headers=result.headers,
                # PostgreSQL's text holds no NUL: a body with one would fail every record.
                body=result.body.decode("utf-8", "replace").replace("\x00", "\ufffd"),
                error=result.error,
                result=kind,
                due=due,
            )
        )
        if len(self._outcomes) >= FLUSH_SIZE:
            self._flushed.set()

    # -- recording -------------------------------------------------------------------------------

    async def _write(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed.wait(), FLUSH_SECONDS)
            self._flushed.clear()
            await self._flush()

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        settings = self.settings()
        try:
            disabled = await asyncio.to_thread(self.queue.record, batch, settings.disable_after)
        except Exception as exc:
            # Kept for the next flush; if this process dies first, the claims expire and the
            # deliveries are sent again (at least once).
            log.warning("cannot record %d delivery attempts: %s", len(batch), exc)
            self._outcomes[:0] = batch
            await asyncio.sleep(0.5)
            return
        self.metrics.recorded(batch)
        self._wake.set()  # a FIFO key's next delivery may be due now
        for endpoint_id in disabled:
            await self._disabled(endpoint_id)

    async def _disabled(self, endpoint_id: str) -> None:
        self._targets.pop(endpoint_id, None)
        try:
            endpoint = await asyncio.to_thread(self.endpoints.get, endpoint_id)
        except UnknownEndpoint:
            return
        log.warning("webhook endpoint %s disabled: %s", endpoint_id, endpoint.disabled_reason)
        self.metrics.endpoint_disabled()
        try:
            await asyncio.to_thread(
                lambda: self.publisher.publish(
                    "endpoint.disabled",
                    {
                        "endpoint_id": endpoint.id,
                        "url": endpoint.url,
                        "reason": endpoint.disabled_reason or "disabled",
                    },
                    publisher="portico",
                    tenant=endpoint.tenant,
                    idempotency_key=f"endpoint.disabled:{endpoint.id}:{endpoint.disabled_at}",
                    internal=True,
                )
            )
        except Exception as exc:
            log.warning("cannot publish endpoint.disabled for %s: %s", endpoint_id, exc)
