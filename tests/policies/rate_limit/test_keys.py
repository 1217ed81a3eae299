"""The counter keys of a limit (``keys.KeyMaker``): tagged by kind, prefixed by the limit, and the
same key for the same value whether or not it was kept from an earlier request."""

from __future__ import annotations

from portico.gateway.exchange import Exchange, Identity
from portico.gateway.headers import Headers
from portico.policies.rate_limit.keys import MEMO_SIZE, KeyMaker

PREFIX = "rl:burst:60s:"


def exchange(identity: Identity | None, client_ip: str = "192.0.2.7") -> Exchange:
    return Exchange(
        method="GET",
        path="/orders",
        query="",
        headers=Headers([("x-tenant-key", "k1")]),
        http_version="1.1",
        scheme="http",
        host="api.example",
        client_ip=client_ip,
        peer_ip=client_ip,
        request_id="r1",
        route=None,
        path_params={},
        upstream_path="/orders",
        identity=identity,
    )


def maker(*parts: str) -> KeyMaker:
    return KeyMaker(parts, "orders", "backend", 64, PREFIX)


def test_a_consumer_key_is_the_same_whether_kept_or_made() -> None:
    keys = maker("consumer")
    alice = Identity("acme/alice", "acme")

    first = keys.key(exchange(alice))
    again = keys.key(exchange(Identity("acme/alice", "acme")))

    assert first == again == PREFIX + "c=acme/alice"


def test_consumers_and_addresses_never_share_a_key() -> None:
    keys = maker("consumer")
    # A consumer whose name is an address, and that address without a consumer.
    named = keys.key(exchange(Identity("192.0.2.7")))
    anonymous = keys.key(exchange(None, "192.0.2.7"))
    other = keys.key(exchange(Identity("acme/bob")))

    assert named == PREFIX + "c=192.0.2.7"
    assert anonymous == PREFIX + "ip=192.0.2.7"
    assert len({named, anonymous, other}) == 3


def test_tenant_route_service_and_header_keys() -> None:
    identity = Identity("acme/alice", "acme")
    assert maker("tenant").key(exchange(identity)) == PREFIX + "t=acme"
    assert maker("route").key(exchange(identity)) == PREFIX + "r=orders"
    assert maker("service").key(exchange(identity)) == PREFIX + "s=backend"
    assert maker("header:x-tenant-key").key(exchange(identity)) == PREFIX + "h=k1"
    assert maker("consumer", "route").key(exchange(identity)) == PREFIX + "c=acme/alice|r=orders"


def test_a_value_that_needs_escaping_is_escaped_when_kept() -> None:
    keys = maker("consumer")
    identity = Identity("acme/a|b%c")

    expected = PREFIX + "c=acme/a%7Cb%25c"
    assert keys.key(exchange(identity)) == keys.key(exchange(identity)) == expected


def test_the_kept_keys_stay_bounded() -> None:
    keys = maker("consumer")
    for n in range(MEMO_SIZE + 10):
        assert keys.key(exchange(Identity(f"t/c{n}"))) == f"{PREFIX}c=t/c{n}"
    assert keys.key(exchange(Identity("t/c0"))) == PREFIX + "c=t/c0"
