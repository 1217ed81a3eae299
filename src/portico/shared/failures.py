"""What a policy does when the shared state fails: count every failure, log a few.

Redis going away fails every request of every route that needs it at once; one log line per
request would bury the log (and the disk) in identical lines. :class:`StateFailures` counts each
failure in ``portico_shared_state_failures_total`` and logs at most one line per interval for
its policy and route, saying how many failures it did not log since. Every policy that uses the
shared state counts in that one counter, obtained by its name when the policy is built.
"""

from __future__ import annotations

import logging
import time

from portico.gateway import problems
from portico.gateway.exchange import Reply
from portico.gateway.headers import Headers
from portico.gateway.stats import GatewayStats
from portico.shared.state import SharedStateUnavailable

__all__ = ["LOG_INTERVAL", "StateFailures", "unavailable"]

LOG_INTERVAL = 10.0
"""Seconds between two log lines about the same policy and route."""

log = logging.getLogger("portico.shared")


class StateFailures:
    """The failures of one policy of one route: counted always, logged now and then."""

    __slots__ = ("_counted", "_last_logged", "_policy", "_route", "_unlogged", "on_failure")

    def __init__(self, policy: str, route: str, stats: GatewayStats, on_failure: str) -> None:
        self._policy = policy
        self._route = route
        self._counted = stats.counter(
            "portico_shared_state_failures",
            "Operations of a policy on the shared state (Redis) that failed or timed out.",
            ("policy", "route"),
        )
        self.on_failure = on_failure
        """``open`` (go on without the state) or ``closed`` (answer 503)."""
        self._last_logged = -LOG_INTERVAL
        self._unlogged = 0

    @property
    def fails_closed(self) -> bool:
        return self.on_failure == "closed"

    def failed(self, exc: SharedStateUnavailable | Exception) -> None:
        self._counted.inc((self._policy, self._route))
        now = time.monotonic()
        if now - self._last_logged < LOG_INTERVAL:
            self._unlogged += 1
            return
        skipped, self._unlogged = self._unlogged, 0
        self._last_logged = now
        more = f" ({skipped} more since the last line)" if skipped else ""
        log.warning(
            "%s policy of route %s: shared state failed, failing %s%s: %s",
            self._policy,
            self._route,
            self.on_failure,
            more,
            exc,
        )


def unavailable(request_id: str) -> Reply:
    """The 503 of a policy that fails closed: ``shared-state-unavailable``, ``Retry-After: 1``."""
    retry = Headers([("retry-after", "1")])
    return problems.problem(problems.SHARED_STATE_UNAVAILABLE, request_id, headers=retry)
