"""``portico webhooks deliveries`` and ``portico webhooks redeliver``: the delivery log, and
dead deliveries sent again (docs/webhooks-operations.md)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from portico.events import cli_support as support
from portico.identity.cli import CommandError

# The store, the catalog and the SSRF guard are imported by the commands: registering them runs
# on every `portico`, and `portico --help` must not pay for them.
if TYPE_CHECKING:
    from portico.events.service import Events


_ID_HELP = "the id `portico webhooks endpoints list` shows"
STATUSES = ("pending", "succeeded", "dead", "cancelled")
DISABLED_BY_OPERATOR = "disabled by an operator"
DISABLED_IN_CONFIG = "disabled in the config"


def cmd_deliveries(args: argparse.Namespace) -> int:
    from portico.events.log import DeliveryFilter

    config = support.config(args)
    if args.dead and args.status not in (None, "dead"):
        raise CommandError("--dead and --status: give one of them")
    since, until = support.time_range(args.since, args.until)
    where = DeliveryFilter(
        endpoint_id=args.endpoint,
        consumer=args.consumer,
        status="dead" if args.dead else args.status,
        event_type=args.event_type,
        since=since,
        until=until,
    )
    with support.events(config) as events:
        found = events.delivery_log.deliveries(where, limit=max(1, args.limit))
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        support.say("No deliveries.")
        return 0
    rows = [
        [
            str(d["id"]),
            d["status"],
            str(d["attempts"]),
            "" if d["last_status"] is None else str(d["last_status"]),
            d["event_type"],
            d["endpoint_id"],
            d["event_id"],
            support.short(d["published_at"]),
        ]
        for d in found
    ]
    support.table(
        ["ID", "STATUS", "ATTEMPTS", "LAST", "TYPE", "ENDPOINT", "EVENT", "PUBLISHED"], rows
    )
    return 0


def cmd_delivery(args: argparse.Namespace) -> int:
    config = support.config(args)
    with support.events(config) as events:
        log = events.delivery_log
        found = log.delivery(args.delivery_id)
        if found is None:
            raise CommandError(f"no webhook delivery {args.delivery_id}")
        attempts = log.attempts(args.delivery_id)
        event = log.event(found["event_id"])
    if args.json:
        print(json.dumps({**found, "event": event, "attempt_log": attempts}, indent=2))
        return 0
    for key, value in found.items():
        print(f"{key + ':':<18} {'' if value is None else value}")
    for attempt in attempts:
        what = attempt["status"] if attempt["status"] is not None else attempt["error"]
        print(
            f"attempt {attempt['attempt']}: {support.short(attempt['at'])} {what} "
            f"{attempt['latency_ms']} ms {attempt['outcome']}"
        )
    return 0


def cmd_redeliver(args: argparse.Namespace) -> int:
    config = support.config(args)
    bulk = args.endpoint is not None or args.since is not None or args.until is not None
    if args.delivery_ids and bulk:
        raise CommandError("give delivery ids, or --endpoint with --since and --until, not both")
    if not args.delivery_ids and not bulk:
        raise CommandError("redeliver what: delivery ids, or --endpoint EP --since T --until T")
    with support.events(config) as events:
        if args.delivery_ids:
            count = _redeliver_each(events, args.delivery_ids)
        else:
            if args.endpoint is None or args.since is None or args.until is None:
                raise CommandError("a bulk redelivery needs --endpoint, --since and --until")
            since, until = support.time_range(args.since, args.until)
            endpoint = support.endpoint(events, args.endpoint)
            count = events.queue.redeliver(
                endpoint_id=endpoint.id, since=since, until=until, now=time.time()
            )
            support.audit(events).record(
                support.author(),
                "webhook_endpoint.redeliver",
                endpoint.id,
                tenant=endpoint.tenant,
                detail={"since": args.since, "until": args.until, "redelivered": count},
            )
    support.say(f"Redelivering {count} deliveries.")
    return 0


def _redeliver_each(events: Events, delivery_ids: Sequence[int]) -> int:
    log = events.delivery_log
    found = {}
    for delivery_id in delivery_ids:
        delivery = log.delivery(delivery_id)
        if delivery is None:
            raise CommandError(f"no webhook delivery {delivery_id}")
        if delivery["status"] not in ("dead", "cancelled"):
            raise CommandError(
                f"delivery {delivery_id} is {delivery['status']}: only a dead or cancelled "
                "delivery is redelivered"
            )
        if delivery["consumer"] is None:
            raise CommandError(f"the endpoint of delivery {delivery_id} was deleted")
        found[delivery_id] = delivery
    count = events.queue.redeliver(delivery_ids=list(found), now=time.time())
    audit = support.audit(events)
    for delivery_id, delivery in found.items():
        audit.record(
            support.author(),
            "webhook_delivery.redeliver",
            str(delivery_id),
            tenant=str(delivery["consumer"]).partition("/")[0],
            before={"status": delivery["status"], "attempts": delivery["attempts"]},
            after={"status": "pending", "attempts": 0},
            detail={"endpoint_id": delivery["endpoint_id"], "event_id": delivery["event_id"]},
        )
    return count
