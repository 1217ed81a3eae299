"""``portico events`` and ``portico webhooks``: the event catalog, publishing, webhook endpoints,
the delivery log and redelivery, straight on the store of the config (``database.url``), as
``portico keys`` works (docs/webhooks-operations.md).

A secret (a new endpoint's, a rotated one) is printed once, alone on standard output
(``SECRET=$(portico webhooks endpoints create ...)`` works); everything else goes to standard
error, or is the table or ``--json`` a listing prints. Every change is written to the audit log
as ``cli:<user>``, never with a secret. The endpoints of the config file (``ep_cfg_...``) change
in the file: changing, deleting or rotating one is refused; disabling, enabling and redelivering
are not. Nothing here delivers: the running ``portico serve`` (or ``--role worker``) finds what
was queued at its next poll.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portico.core.commands import subcommand
from portico.events import cli_support as support
from portico.events.cli_deliveries import cmd_deliveries, cmd_delivery, cmd_redeliver
from portico.identity.cli import CommandError, parse_duration

# The store, the catalog and the SSRF guard are imported by the commands: registering them runs
# on every `portico`, and `portico --help` must not pay for them.
if TYPE_CHECKING:
    from portico.config.model import PorticoConfig

__all__ = ["register"]

_READS = "its events section and database.url"

_ID_HELP = "the id `portico webhooks endpoints list` shows"
STATUSES = ("pending", "succeeded", "dead", "cancelled")
DISABLED_BY_OPERATOR = "disabled by an operator"
DISABLED_IN_CONFIG = "disabled in the config"


def register(subparsers: Any, load_config: Callable[[Path], PorticoConfig]) -> None:
    """Add ``portico events`` and ``portico webhooks`` to the ``portico`` command."""
    events = subparsers.add_parser(
        "events",
        help="list the event types, publish an event",
        description="The event catalog of the config, and publishing an event into the store "
        "(docs/webhooks-operations.md).",
    )
    events_sub = events.add_subparsers(dest="events_command", required=True, metavar="COMMAND")
    webhooks = subparsers.add_parser(
        "webhooks",
        help="manage webhook endpoints, read the delivery log, redeliver dead deliveries",
        description="Webhook endpoints, the delivery log and redelivery, in the store of the "
        "config (docs/webhooks-operations.md).",
    )
    webhooks_sub = webhooks.add_subparsers(
        dest="webhooks_command", required=True, metavar="COMMAND"
    )

    def command(
        sub: Any, name: str, help_text: str, func: Callable[[argparse.Namespace], int]
    ) -> Any:
        return subcommand(sub, name, help_text, func, reads=_READS, load_config=load_config)

    def json_option(parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="JSON instead of a table")

    types = command(events_sub, "types", "list the event types with their versions", cmd_types)
    json_option(types)
    publish = command(events_sub, "publish", "publish an event and print its id", cmd_publish)
    publish.add_argument("type", metavar="TYPE", help="an event type of the catalog")
    data = publish.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="JSON", help="the event's data, as JSON (default: null)")
    data.add_argument(
        "--data-file", type=Path, metavar="FILE", help="read the data from this JSON file"
    )
    publish.add_argument(
        "--tenant", help="only this tenant's endpoints receive it (default: every subscriber)"
    )
    publish.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="the same key again returns the first event instead of publishing a second one",
    )
    json_option(publish)

    endpoints = webhooks_sub.add_parser(
        "endpoints",
        help="list, create, show, change, delete webhook endpoints; rotate their secrets",
        description="Webhook endpoints of every consumer, in the store.",
    )
    ep_sub = endpoints.add_subparsers(dest="endpoints_command", required=True, metavar="COMMAND")
    listing = command(ep_sub, "list", "list the endpoints (never their secrets)", cmd_list)
    listing.add_argument("--consumer", metavar="TENANT/NAME", help="only this consumer's")
    listing.add_argument("--tenant", help="only this tenant's consumers'")
    json_option(listing)

    def endpoint_fields(parser: Any, creating: bool) -> None:
        parser.add_argument(
            "--url", required=creating, help="https://... (http only with allow_http)"
        )
        parser.add_argument(
            "--type",
            dest="types",
            action="append",
            metavar="TYPE",
            help="an event type, prefix.* or *; repeatable (default when creating: *)",
        )
        parser.add_argument("--description", help="what the endpoint is for, shown to its owner")
        parser.add_argument(
            "--filter", metavar="JSON", help='a payload filter: {"data.total": {"gte": 100}}'
        )
        parser.add_argument(
            "--rate-limit", type=float, metavar="PER_SECOND", help="deliveries per second at most"
        )
        parser.add_argument(
            "--concurrency", type=int, metavar="N", help="deliveries in flight at most"
        )
        parser.add_argument(
            "--ordering", metavar="KEY", help="FIFO per key: endpoint, or a field (data.order_id)"
        )

    create = command(
        ep_sub, "create", "create an endpoint for a consumer and print its secret once", cmd_create
    )
    create.add_argument("--consumer", required=True, metavar="TENANT/NAME", help="its owner")
    endpoint_fields(create, creating=True)
    json_option(create)

    show = command(ep_sub, "show", "show an endpoint (never its secret)", cmd_show)
    show.add_argument("endpoint_id", metavar="ENDPOINT_ID", help=_ID_HELP)
    json_option(show)

    update = command(ep_sub, "update", "change an endpoint's fields given", cmd_update)
    update.add_argument("endpoint_id", metavar="ENDPOINT_ID", help=_ID_HELP)
    endpoint_fields(update, creating=False)
    for name in ("description", "filter", "rate-limit", "concurrency", "ordering"):
        update.add_argument(f"--no-{name}", action="store_true", help=f"remove its {name}")
    json_option(update)

    delete = command(
        ep_sub, "delete", "delete an endpoint; its pending deliveries stop", cmd_delete
    )
    delete.add_argument("endpoint_id", metavar="ENDPOINT_ID", help=_ID_HELP)

    rotate = command(
        ep_sub,
        "rotate-secret",
        "give an endpoint a new secret, printed once; the old one signs too during the overlap",
        cmd_rotate,
    )
    rotate.add_argument("endpoint_id", metavar="ENDPOINT_ID", help=_ID_HELP)
    rotate.add_argument(
        "--overlap",
        type=parse_duration,
        metavar="DURATION",
        help="how long the previous secret keeps signing (default: events.delivery.secret_overlap)",
    )

    enable = command(ep_sub, "enable", "enable an endpoint: its deliveries flow again", cmd_enable)
    enable.add_argument("endpoint_id", metavar="ENDPOINT_ID", help=_ID_HELP)
    disable = command(
        ep_sub, "disable", "disable an endpoint: its deliveries wait until enabled", cmd_disable
    )
    disable.add_argument("endpoint_id", metavar="ENDPOINT_ID", help=_ID_HELP)

    deliveries = webhooks_sub.add_parser(
        "deliveries",
        help="list the delivery log, show a delivery with its attempts",
        description="The delivery log, newest first.",
    )
    dl_sub = deliveries.add_subparsers(dest="deliveries_command", required=True, metavar="COMMAND")
    dl_list = command(dl_sub, "list", "list deliveries, newest first", cmd_deliveries)
    dl_list.add_argument("--dead", action="store_true", help="only the dead ones (--status dead)")
    dl_list.add_argument("--status", choices=STATUSES, help="only deliveries in this state")
    dl_list.add_argument("--endpoint", metavar="ENDPOINT_ID", help="only this endpoint's")
    dl_list.add_argument("--consumer", metavar="TENANT/NAME", help="only this consumer's")
    dl_list.add_argument("--event-type", metavar="TYPE", help="only events of this type")
    dl_list.add_argument("--since", metavar="TIME", help="published at or after (ISO 8601 or Unix)")
    dl_list.add_argument("--until", metavar="TIME", help="published before")
    dl_list.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    json_option(dl_list)
    dl_show = command(dl_sub, "show", "show a delivery, its event and its attempts", cmd_delivery)
    dl_show.add_argument(
        "delivery_id", type=int, metavar="DELIVERY_ID", help="the id the list shows"
    )
    json_option(dl_show)

    redeliver = command(
        webhooks_sub,
        "redeliver",
        "make dead deliveries pending again: by id, or an endpoint's that died in a time range",
        cmd_redeliver,
    )
    redeliver.add_argument(
        "delivery_ids",
        nargs="*",
        type=int,
        metavar="DELIVERY_ID",
        help="dead deliveries to send again (portico webhooks deliveries list --dead)",
    )
    redeliver.add_argument(
        "--endpoint", metavar="ENDPOINT_ID", help="this endpoint's deliveries that died between"
    )
    redeliver.add_argument("--since", metavar="TIME", help="died at or after (ISO 8601 or Unix)")
    redeliver.add_argument("--until", metavar="TIME", help="died before (ISO 8601 or Unix)")


# -- the events --------------------------------------------------------------------------------


def cmd_types(args: argparse.Namespace) -> int:
    from portico.events.catalog import OPERATIONAL_TYPES, EventCatalog

    catalog = EventCatalog(support.config(args).events)
    entries = sorted(catalog.types.items())
    if args.json:
        shown = [
            {
                "name": name,
                "description": kind.description,
                "version": kind.version,
                "owner": kind.owner,
                "schema": kind.schema_,
                "operational": name in OPERATIONAL_TYPES,
            }
            for name, kind in entries
        ]
        print(json.dumps(shown, indent=2))
        return 0
    rows = [
        [
            name,
            kind.version,
            kind.owner or "-",
            "portico" if name in OPERATIONAL_TYPES else "",
            kind.description,
        ]
        for name, kind in entries
    ]
    support.table(["TYPE", "VERSION", "OWNER", "BY", "DESCRIPTION"], rows)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from portico.events.catalog import InvalidPayload, UnknownEventType

    config = support.config(args)
    if args.tenant is not None and args.tenant not in config.tenants:
        raise CommandError(f"no tenant {args.tenant!r} under tenants: in the config")
    data = support.json_argument("--data", args.data) if args.data is not None else None
    if args.data_file is not None:
        data = support.json_argument(
            str(args.data_file), args.data_file.read_text(encoding="utf-8")
        )
    with support.events(config) as events:
        try:
            published = events.publisher.publish(
                args.type,
                data,
                publisher=support.actor(),
                tenant=args.tenant,
                idempotency_key=args.idempotency_key,
            )
        except UnknownEventType as exc:
            raise CommandError(f"{exc} (portico events types lists them)") from None
        except InvalidPayload as exc:
            where = "; ".join(f"{e.pointer}: {e.message}" for e in exc.errors)
            raise CommandError(f"{exc}: {where}") from None
        if published.created:
            support.audit(events).record(
                support.author(),
                "event.publish",
                published.id,
                tenant=args.tenant,
                detail={"type": published.type, "deliveries": published.deliveries},
            )
    if args.json:
        print(json.dumps({**published.describe(), "replayed": not published.created}))
        return 0
    if published.created:
        support.say(
            f"Published {published.type} {published.id}: {published.deliveries} deliveries."
        )
    else:
        support.say(f"The idempotency key was used before: this is event {published.id}.")
    print(published.id, flush=True)
    return 0


# -- the endpoints -----------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    config = support.config(args)
    with support.events(config) as events:
        found = events.endpoints.list(consumer=args.consumer, tenant=args.tenant)
    if args.json:
        print(json.dumps([support.describe(e) for e in found], indent=2))
        return 0
    if not found:
        support.say("No webhook endpoints.")
        return 0
    rows = [
        [
            e.id,
            e.consumer,
            "disabled" if e.disabled_at else "enabled",
            e.source,
            ",".join(e.types),
            e.url,
        ]
        for e in found
    ]
    support.table(["ENDPOINT ID", "CONSUMER", "STATE", "SOURCE", "TYPES", "URL"], rows)
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    config = support.config(args)
    consumer = support.consumer(config, args.consumer)
    types = args.types or ["*"]
    filter = support.json_object("--filter", args.filter)
    with support.events(config) as events:
        support.check(events, args.url, types, filter)
        endpoint, secret = events.endpoints.create(
            consumer,
            args.url,
            types=types,
            description=args.description,
            filter=filter,
            rate_limit=support.positive("--rate-limit", args.rate_limit),
            concurrency=support.positive("--concurrency", args.concurrency),
            ordering_key=support.ordering(args.ordering),
            source="admin",
        )
        support.audit(events).record(
            support.author(),
            "webhook_endpoint.create",
            endpoint.id,
            tenant=endpoint.tenant,
            after=support.describe(endpoint),
        )
    if args.json:
        print(json.dumps({**support.describe(endpoint), "secret": secret}, indent=2))
        return 0
    support.say(f"Created webhook endpoint {endpoint.id} of {consumer} for {endpoint.url}.")
    support.say("This is the only time its signing secret is shown; give it to the receiver now:")
    print(secret, flush=True)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config = support.config(args)
    with support.events(config) as events:
        endpoint = support.endpoint(events, args.endpoint_id)
    support.print_endpoint(endpoint, args.json)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    config = support.config(args)
    changes: dict[str, Any] = {}
    if args.url is not None:
        changes["url"] = args.url
    if args.types:
        changes["types"] = args.types
    for name, value in (
        ("description", args.description),
        ("filter", support.json_object("--filter", args.filter)),
        ("rate_limit", support.positive("--rate-limit", args.rate_limit)),
        ("concurrency", support.positive("--concurrency", args.concurrency)),
        ("ordering_key", support.ordering(args.ordering)),
    ):
        removed = getattr(args, "no_" + name.removesuffix("_key"))
        if value is not None and removed:
            raise CommandError(
                f"--{name.removesuffix('_key').replace('_', '-')} and --no-... both given"
            )
        if value is not None:
            changes[name] = value
        elif removed:
            changes[name] = None
    if not changes:
        raise CommandError("nothing to change: give --url, --type, --description, --filter...")
    with support.events(config) as events:
        endpoint = support.endpoint(events, args.endpoint_id)
        support.refuse_from_file(endpoint, "change")
        support.check(events, changes.get("url"), changes.get("types"), changes.get("filter"))
        after = events.endpoints.update(endpoint.id, changes)
        support.audit(events).record(
            support.author(),
            "webhook_endpoint.update",
            endpoint.id,
            tenant=endpoint.tenant,
            before=support.describe(endpoint),
            after=support.describe(after),
        )
    support.say(f"Changed webhook endpoint {endpoint.id}: {', '.join(sorted(changes))}.")
    support.print_endpoint(after, args.json)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    config = support.config(args)
    with support.events(config) as events:
        endpoint = support.endpoint(events, args.endpoint_id)
        support.refuse_from_file(endpoint, "remove")
        events.endpoints.delete(endpoint.id)
        support.audit(events).record(
            support.author(),
            "webhook_endpoint.delete",
            endpoint.id,
            tenant=endpoint.tenant,
            before=support.describe(endpoint),
        )
    support.say(f"Deleted webhook endpoint {endpoint.id}; its pending deliveries are cancelled.")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    config = support.config(args)
    with support.events(config) as events:
        endpoint = support.endpoint(events, args.endpoint_id)
        support.refuse_from_file(endpoint, "rotate its secret")
        overlap = (
            args.overlap.total_seconds()
            if args.overlap is not None
            else events.delivery().secret_overlap
        )
        secret = events.endpoints.rotate(endpoint.id, overlap)
        until = datetime.now(UTC) + timedelta(seconds=overlap)
        support.audit(events).record(
            support.author(),
            "webhook_endpoint.rotate_secret",
            endpoint.id,
            tenant=endpoint.tenant,
            detail={"overlap": overlap, "previous_secrets_valid_until": until.isoformat()},
        )
    support.say(
        f"Rotated the secret of webhook endpoint {endpoint.id}: the previous one signs too "
        f"until {support.when(until)}. This is the only time the new secret is shown:"
    )
    print(secret, flush=True)
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, None)


def cmd_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, DISABLED_BY_OPERATOR)


def _set_disabled(args: argparse.Namespace, reason: str | None) -> int:
    config = support.config(args)
    state = "enabled" if reason is None else "disabled"
    with support.events(config) as events:
        endpoint = support.endpoint(events, args.endpoint_id)
        if reason is None and endpoint.disabled_reason == DISABLED_IN_CONFIG:
            support.refuse_from_file(endpoint, "enable")
        if (reason is None) == endpoint.enabled:
            support.say(f"Webhook endpoint {endpoint.id} is already {state}.")
            return 0
        after = events.endpoints.set_disabled(endpoint.id, reason)
        support.audit(events).record(
            support.author(),
            "webhook_endpoint.enable" if reason is None else "webhook_endpoint.disable",
            endpoint.id,
            tenant=endpoint.tenant,
            before=support.describe(endpoint),
            after=support.describe(after),
        )
    support.say(f"Webhook endpoint {endpoint.id} is {state}.")
    return 0
