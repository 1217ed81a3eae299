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
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portico.identity.cli import CommandError, parse_duration

# The store, the catalog and the SSRF guard are imported by the commands: registering them runs
# on every `portico`, and `portico --help` must not pay for them.
if TYPE_CHECKING:
    from portico.config.model import PorticoConfig
    from portico.events.endpoints import Endpoint
    from portico.events.service import Events
    from portico.store.repositories import AuditLog, Author

__all__ = ["register"]

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
        parser = sub.add_parser(
            name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
        )
        parser.add_argument(
            "-c",
            "--config",
            default="portico.yaml",
            type=Path,
            metavar="FILE",
            help="the config file: its events section and database.url (default: portico.yaml)",
        )
        parser.set_defaults(func=func, load_config=load_config)
        return parser

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

    catalog = EventCatalog(_config(args).events)
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
    _table(["TYPE", "VERSION", "OWNER", "BY", "DESCRIPTION"], rows)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from portico.events.catalog import InvalidPayload, UnknownEventType

    config = _config(args)
    if args.tenant is not None and args.tenant not in config.tenants:
        raise CommandError(f"no tenant {args.tenant!r} under tenants: in the config")
    data = _json_argument("--data", args.data) if args.data is not None else None
    if args.data_file is not None:
        data = _json_argument(str(args.data_file), args.data_file.read_text(encoding="utf-8"))
    with _events(config) as events:
        try:
            published = events.publisher.publish(
                args.type,
                data,
                publisher=_actor(),
                tenant=args.tenant,
                idempotency_key=args.idempotency_key,
            )
        except UnknownEventType as exc:
            raise CommandError(f"{exc} (portico events types lists them)") from None
        except InvalidPayload as exc:
            where = "; ".join(f"{e.pointer}: {e.message}" for e in exc.errors)
            raise CommandError(f"{exc}: {where}") from None
        if published.created:
            _audit(events).record(
                _author(),
                "event.publish",
                published.id,
                tenant=args.tenant,
                detail={"type": published.type, "deliveries": published.deliveries},
            )
    if args.json:
        print(json.dumps({**published.describe(), "replayed": not published.created}))
        return 0
    if published.created:
        _say(f"Published {published.type} {published.id}: {published.deliveries} deliveries.")
    else:
        _say(f"The idempotency key was used before: this is event {published.id}.")
    print(published.id, flush=True)
    return 0


# -- the endpoints -----------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    config = _config(args)
    with _events(config) as events:
        found = events.endpoints.list(consumer=args.consumer, tenant=args.tenant)
    if args.json:
        print(json.dumps([_describe(e) for e in found], indent=2))
        return 0
    if not found:
        _say("No webhook endpoints.")
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
    _table(["ENDPOINT ID", "CONSUMER", "STATE", "SOURCE", "TYPES", "URL"], rows)
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    config = _config(args)
    consumer = _consumer(config, args.consumer)
    types = args.types or ["*"]
    filter = _json_object("--filter", args.filter)
    with _events(config) as events:
        _check(events, args.url, types, filter)
        endpoint, secret = events.endpoints.create(
            consumer,
            args.url,
            types=types,
            description=args.description,
            filter=filter,
            rate_limit=_positive("--rate-limit", args.rate_limit),
            concurrency=_positive("--concurrency", args.concurrency),
            ordering_key=_ordering(args.ordering),
            source="admin",
        )
        _audit(events).record(
            _author(),
            "webhook_endpoint.create",
            endpoint.id,
            tenant=endpoint.tenant,
            after=_describe(endpoint),
        )
    if args.json:
        print(json.dumps({**_describe(endpoint), "secret": secret}, indent=2))
        return 0
    _say(f"Created webhook endpoint {endpoint.id} of {consumer} for {endpoint.url}.")
    _say("This is the only time its signing secret is shown; give it to the receiver now:")
    print(secret, flush=True)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config = _config(args)
    with _events(config) as events:
        endpoint = _endpoint(events, args.endpoint_id)
    _print_endpoint(endpoint, args.json)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    config = _config(args)
    changes: dict[str, Any] = {}
    if args.url is not None:
        changes["url"] = args.url
    if args.types:
        changes["types"] = args.types
    for name, value in (
        ("description", args.description),
        ("filter", _json_object("--filter", args.filter)),
        ("rate_limit", _positive("--rate-limit", args.rate_limit)),
        ("concurrency", _positive("--concurrency", args.concurrency)),
        ("ordering_key", _ordering(args.ordering)),
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
    with _events(config) as events:
        endpoint = _endpoint(events, args.endpoint_id)
        _refuse_from_file(endpoint, "change")
        _check(events, changes.get("url"), changes.get("types"), changes.get("filter"))
        after = events.endpoints.update(endpoint.id, changes)
        _audit(events).record(
            _author(),
            "webhook_endpoint.update",
            endpoint.id,
            tenant=endpoint.tenant,
            before=_describe(endpoint),
            after=_describe(after),
        )
    _say(f"Changed webhook endpoint {endpoint.id}: {', '.join(sorted(changes))}.")
    _print_endpoint(after, args.json)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    config = _config(args)
    with _events(config) as events:
        endpoint = _endpoint(events, args.endpoint_id)
        _refuse_from_file(endpoint, "remove")
        events.endpoints.delete(endpoint.id)
        _audit(events).record(
            _author(),
            "webhook_endpoint.delete",
            endpoint.id,
            tenant=endpoint.tenant,
            before=_describe(endpoint),
        )
    _say(f"Deleted webhook endpoint {endpoint.id}; its pending deliveries are cancelled.")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    config = _config(args)
    with _events(config) as events:
        endpoint = _endpoint(events, args.endpoint_id)
        _refuse_from_file(endpoint, "rotate its secret")
        overlap = (
            args.overlap.total_seconds()
            if args.overlap is not None
            else events.delivery().secret_overlap
        )
        secret = events.endpoints.rotate(endpoint.id, overlap)
        until = datetime.now(UTC) + timedelta(seconds=overlap)
        _audit(events).record(
            _author(),
            "webhook_endpoint.rotate_secret",
            endpoint.id,
            tenant=endpoint.tenant,
            detail={"overlap": overlap, "previous_secrets_valid_until": until.isoformat()},
        )
    _say(
        f"Rotated the secret of webhook endpoint {endpoint.id}: the previous one signs too "
        f"until {_when(until)}. This is the only time the new secret is shown:"
    )
    print(secret, flush=True)
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, None)


def cmd_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, DISABLED_BY_OPERATOR)


def _set_disabled(args: argparse.Namespace, reason: str | None) -> int:
    config = _config(args)
    state = "enabled" if reason is None else "disabled"
    with _events(config) as events:
        endpoint = _endpoint(events, args.endpoint_id)
        if reason is None and endpoint.disabled_reason == DISABLED_IN_CONFIG:
            _refuse_from_file(endpoint, "enable")
        if (reason is None) == endpoint.enabled:
            _say(f"Webhook endpoint {endpoint.id} is already {state}.")
            return 0
        after = events.endpoints.set_disabled(endpoint.id, reason)
        _audit(events).record(
            _author(),
            "webhook_endpoint.enable" if reason is None else "webhook_endpoint.disable",
            endpoint.id,
            tenant=endpoint.tenant,
            before=_describe(endpoint),
            after=_describe(after),
        )
    _say(f"Webhook endpoint {endpoint.id} is {state}.")
    return 0


# -- the delivery log --------------------------------------------------------------------------


def cmd_deliveries(args: argparse.Namespace) -> int:
    from portico.events.log import DeliveryFilter

    config = _config(args)
    if args.dead and args.status not in (None, "dead"):
        raise CommandError("--dead and --status: give one of them")
    since, until = _range(args.since, args.until)
    where = DeliveryFilter(
        endpoint_id=args.endpoint,
        consumer=args.consumer,
        status="dead" if args.dead else args.status,
        event_type=args.event_type,
        since=since,
        until=until,
    )
    with _events(config) as events:
        found = events.delivery_log.deliveries(where, limit=max(1, args.limit))
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        _say("No deliveries.")
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
            _short(d["published_at"]),
        ]
        for d in found
    ]
    _table(["ID", "STATUS", "ATTEMPTS", "LAST", "TYPE", "ENDPOINT", "EVENT", "PUBLISHED"], rows)
    return 0


def cmd_delivery(args: argparse.Namespace) -> int:
    config = _config(args)
    with _events(config) as events:
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
            f"attempt {attempt['attempt']}: {_short(attempt['at'])} {what} "
            f"{attempt['latency_ms']} ms {attempt['outcome']}"
        )
    return 0


def cmd_redeliver(args: argparse.Namespace) -> int:
    config = _config(args)
    bulk = args.endpoint is not None or args.since is not None or args.until is not None
    if args.delivery_ids and bulk:
        raise CommandError("give delivery ids, or --endpoint with --since and --until, not both")
    if not args.delivery_ids and not bulk:
        raise CommandError("redeliver what: delivery ids, or --endpoint EP --since T --until T")
    with _events(config) as events:
        if args.delivery_ids:
            count = _redeliver_each(events, args.delivery_ids)
        else:
            if args.endpoint is None or args.since is None or args.until is None:
                raise CommandError("a bulk redelivery needs --endpoint, --since and --until")
            since, until = _range(args.since, args.until)
            endpoint = _endpoint(events, args.endpoint)
            count = events.queue.redeliver(
                endpoint_id=endpoint.id, since=since, until=until, now=time.time()
            )
            _audit(events).record(
                _author(),
                "webhook_endpoint.redeliver",
                endpoint.id,
                tenant=endpoint.tenant,
                detail={"since": args.since, "until": args.until, "redelivered": count},
            )
    _say(f"Redelivering {count} deliveries.")
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
    audit = _audit(events)
    for delivery_id, delivery in found.items():
        audit.record(
            _author(),
            "webhook_delivery.redeliver",
            str(delivery_id),
            tenant=str(delivery["consumer"]).partition("/")[0],
            before={"status": delivery["status"], "attempts": delivery["attempts"]},
            after={"status": "pending", "attempts": 0},
            detail={"endpoint_id": delivery["endpoint_id"], "event_id": delivery["event_id"]},
        )
    return count


# -- helpers -----------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> PorticoConfig:
    config: PorticoConfig = args.load_config(args.config)
    return config


@contextmanager
def _events(config: PorticoConfig) -> Iterator[Events]:
    from portico.events.service import Events
    from portico.store.database import Database
    from portico.store.secrets import current_store_secrets

    # As `portico keys`: SQLite migrated in place, PostgreSQL must be current.
    secrets = current_store_secrets(config.database.url, config.database.secrets_key_file)
    database = Database(config.database.url)
    try:
        yield Events(database, secrets, lambda: config)
    finally:
        database.dispose()


def _audit(events: Events) -> AuditLog:
    from portico.store.repositories import AuditLog

    return AuditLog(events.database)


def _endpoint(events: Events, endpoint_id: str) -> Endpoint:
    from portico.events.endpoints import UnknownEndpoint

    try:
        return events.endpoints.get(endpoint_id)
    except UnknownEndpoint:
        raise CommandError(
            f"no webhook endpoint {endpoint_id} (portico webhooks endpoints list)"
        ) from None


def _refuse_from_file(endpoint: Endpoint, what: str) -> None:
    from portico.events.endpoints import CONFIG_PREFIX

    if endpoint.source == "config" or endpoint.id.startswith(CONFIG_PREFIX):
        name = endpoint.id.removeprefix(CONFIG_PREFIX)
        raise CommandError(
            f"webhook endpoint {endpoint.id} is declared in the config "
            f"(events.endpoints.{name}): {what} it there"
        )


def _check(
    events: Events, url: str | None, types: Sequence[str] | None, filter: dict[str, Any] | None
) -> None:
    from portico.events.registration import EndpointRefused, check_endpoint

    try:
        check_endpoint(events.destinations(), events.catalog(), url=url, types=types, filter=filter)
    except EndpointRefused as exc:
        flags = {"/url": "--url", "/types": "--type", "/filter": "--filter"}
        parts = []
        for refusal in exc.refusals:
            flag = next((f for p, f in flags.items() if refusal.pointer.startswith(p)), "")
            parts.append(f"{flag} {refusal.message}".strip())
        raise CommandError("the endpoint is refused: " + "; ".join(parts)) from None


def _consumer(config: PorticoConfig, name: str) -> str:
    tenant_name, sep, consumer = name.partition("/")
    tenant = config.tenants.get(tenant_name)
    if sep and tenant is not None and consumer in tenant.consumers:
        return name
    known = [f"{t}/{c}" for t, spec in config.tenants.items() for c in spec.consumers]
    raise CommandError(
        f"no consumer {name!r} under tenants: in the config (known: {', '.join(known) or 'none'})"
    )


def _ordering(key: str | None) -> str | None:
    import re

    if key is None:
        return None
    if not re.fullmatch(r"endpoint|data(\.[A-Za-z0-9_-]+)+", key):
        raise CommandError(f"--ordering {key!r}: endpoint, or a field of the data (data.order_id)")
    return key


def _positive(flag: str, value: float | None) -> Any:
    if value is not None and value <= 0:
        raise CommandError(f"{flag} must be more than 0")
    return value


def _json_argument(where: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{where} is not JSON: {exc}") from None


def _json_object(flag: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value = _json_argument(flag, text)
    if not isinstance(value, dict):
        raise CommandError(f"{flag} is a JSON object of field paths to conditions")
    return value


def _range(since_text: str | None, until_text: str | None) -> tuple[float | None, float | None]:
    from portico.events.moments import InvalidMoment, parse_moment

    try:
        since = None if since_text is None else parse_moment(since_text)
        until = None if until_text is None else parse_moment(until_text)
    except InvalidMoment as exc:
        raise CommandError(str(exc)) from None
    if since is not None and until is not None and since >= until:
        raise CommandError("--until must be later than --since")
    return since, until


def _describe(endpoint: Endpoint) -> dict[str, Any]:
    return {**endpoint.describe(), "tenant": endpoint.tenant}


def _print_endpoint(endpoint: Endpoint, as_json: bool) -> None:
    shown = _describe(endpoint)
    if as_json:
        print(json.dumps(shown, indent=2))
        return
    for key, value in shown.items():
        if isinstance(value, dict | list):
            value = json.dumps(value)
        print(f"{key + ':':<16} {'' if value is None else value}")


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        cells = zip(row, widths, strict=True)
        print("  ".join(str(cell).ljust(width) for cell, width in cells).rstrip())


def _short(value: str | None) -> str:
    if value is None:
        return ""
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _actor() -> str:
    from portico.store.repositories import command_line_actor

    return command_line_actor()


def _author() -> Author:
    from portico.store.repositories import Author

    return Author(_actor())


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
