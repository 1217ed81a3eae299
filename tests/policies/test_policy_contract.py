"""The whole policy contract past the response head: the response body (whole up to a limit, or
chunk by chunk) and the completion of the exchange, through a real gateway and real sockets.

The policies here are test policies registered for the duration of one test, as a third-party
policy would be: they exercise the contract, not a shipped policy.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel
from tests.support.gateway import (
    RawConnection,
    RawResponse,
    check_problem,
    running_gateway,
    wait_for,
)
from tests.support.upstreams import Upstream, pattern

from portico.gateway import problems
from portico.gateway.completion import Completion
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.identity.apikeys import generate_key
from portico.identity.context import BuildContext
from portico.policies.catalogue import POLICIES
from portico.policies.registry import PolicyType

KEY = generate_key()


def data(size: int) -> bytes:
    return b"".join(pattern(size))


# -- test policies -----------------------------------------------------------------------------


class MaskSettings(BaseModel):
    limit: int = 1 << 20
    over_limit: Literal["pass", "refuse"] = "refuse"


class MaskDigits:
    """Replaces every digit of the body with ``#``: a masking policy must see all of it."""

    needs_body = False

    def __init__(self, settings: MaskSettings) -> None:
        self.response_body_limit = settings.limit
        self.over_limit = settings.over_limit
        self.calls = 0

    def on_request(self, exchange: Exchange) -> None:
        return None

    def on_response_body(
        self, exchange: Exchange, status: int, headers: Headers, body: bytes | None
    ) -> bytes | Reply | None:
        self.calls += 1
        if body is None:
            if self.over_limit == "pass":
                headers.set("x-masked", "no")
                return None
            return problems.problem(problems.UPSTREAM_UNAVAILABLE, exchange.request_id)
        headers.set("x-masked", "yes")
        return masked(body)


class ShoutSettings(BaseModel):
    pass


class Shout:
    """Upper-cases the body chunk by chunk and appends a trailer line at the end."""

    needs_body = False

    def __init__(self) -> None:
        self.chunks = 0
        self.ends = 0

    def on_request(self, exchange: Exchange) -> None:
        return None

    def on_response_chunk(self, exchange: Exchange, chunk: bytes, end: bool) -> bytes:
        self.chunks += 1
        if end:
            self.ends += 1
            return chunk.upper() + b"\n-- shouted"
        return chunk.upper()


class RecordSettings(BaseModel):
    pass


@dataclass
class Recorder:
    """Keeps every completion it is told of."""

    needs_body: bool = False
    completions: list[Completion] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_request(self, exchange: Exchange) -> None:
        return None

    def on_complete(self, exchange: Exchange, completion: Completion) -> None:
        assert completion.exchange is exchange
        with self.lock:
            self.completions.append(completion)

    def one(self) -> Completion:
        wait_for(lambda: len(self.completions) >= 1, what="a completion")
        with self.lock:
            assert len(self.completions) == 1, self.completions
            return self.completions.pop()


BUILT: dict[str, list[object]] = {"mask-digits": [], "shout": [], "record": []}


@pytest.fixture(autouse=True)
def test_policies() -> Iterator[None]:
    """The three test policies, added to the catalogue for one test only (as a plugin would)."""

    def build_mask(settings: MaskSettings, context: BuildContext) -> MaskDigits:
        policy = MaskDigits(settings)
        BUILT["mask-digits"].append(policy)
        return policy

    def build_shout(settings: ShoutSettings, context: BuildContext) -> Shout:
        policy = Shout()
        BUILT["shout"].append(policy)
        return policy

    def build_record(settings: RecordSettings, context: BuildContext) -> Recorder:
        policy = Recorder()
        BUILT["record"].append(policy)
        return policy

    POLICIES.add("mask-digits", PolicyType(MaskSettings, build_mask))
    POLICIES.add("shout", PolicyType(ShoutSettings, build_shout))
    POLICIES.add("record", PolicyType(RecordSettings, build_record))
    try:
        yield
    finally:
        for name, built in BUILT.items():
            POLICIES.remove(name)
            built.clear()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("main")
    yield server
    server.close()


def config(upstream: Upstream) -> dict[str, object]:
    def route(name: str, *policies: dict[str, object]) -> dict[str, object]:
        return {
            "name": name,
            "match": {"path": f"/{name}/{{rest:path}}"},
            "service": "main",
            "strip_prefix": f"/{name}",
            "policies": list(policies),
        }

    return {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "tenants": {
            "t": {"consumers": {"c": {"api_keys": [{"id": KEY.id, "sha256": KEY.sha256}]}}}
        },
        "routes": [
            route("masked", {"type": "mask-digits"}),
            route("small", {"type": "mask-digits", "limit": 1000}),
            route("small-pass", {"type": "mask-digits", "limit": 1000, "over_limit": "pass"}),
            route("shout", {"type": "shout"}),
            route("both", {"type": "shout"}, {"type": "mask-digits"}),
            route("plain"),
            route("recorded", {"type": "record"}),
            route("guarded", {"type": "record"}, {"type": "auth", "methods": ["api_key"]}),
        ],
    }


def raw_exchange(tmp_path: Path, upstream: Upstream, request: bytes) -> RawResponse:
    """One request on a fresh gateway over a raw connection: the response as it came."""
    with (
        running_gateway(tmp_path, config(upstream)) as gateway,
        RawConnection(gateway.port) as conn,
    ):
        conn.send(request)
        return conn.read_response()


def masked(body: bytes) -> bytes:
    """What the mask-digits policy makes of ``body``."""
    return re.sub(rb"[0-9]", b"#", body)


def get(path: str, version: str = "1.1", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: a\r\n\r\n".encode()


# -- the whole body ------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_whole_body_policy_replaces_the_body_and_the_length_follows(
    tmp_path: Path, upstream: Upstream, framing: str
) -> None:
    response = raw_exchange(tmp_path, upstream, get(f"/masked/bytes/3000?framing={framing}"))
    assert response.status == 200
    assert response.header("x-masked") == "yes"
    expected = masked(data(3000))
    assert response.body == expected
    # The body was seen whole, so it goes with its new length, never chunked.
    assert response.header("content-length") == str(len(expected))
    assert response.header("transfer-encoding") is None
    assert BUILT["mask-digits"][0].calls == 1  # type: ignore[attr-defined]


def test_over_its_limit_a_masking_policy_refuses_and_nothing_of_the_body_leaks(
    tmp_path: Path, upstream: Upstream
) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway, gateway.client() as http:
        refused = http.get("/small/bytes/5000")
        check_problem(refused, 502, "https://portico.dev/problems/upstream-unavailable")
        assert data(100) not in refused.content
        # The connection the upstream was sending on is dropped; the next request still works.
        small = http.get("/small/bytes/500")
        assert small.status_code == 200
        assert small.content == masked(data(500))


def test_over_its_limit_a_policy_may_let_the_body_stream_untouched(
    tmp_path: Path, upstream: Upstream
) -> None:
    with (
        running_gateway(tmp_path, config(upstream)) as gateway,
        RawConnection(gateway.port) as conn,
    ):
        conn.send(get("/small-pass/bytes/200000"))
        response = conn.read_response()
        assert response.status == 200
        assert response.header("x-masked") == "no"
        assert response.body == data(200000)
        conn.send(get("/small-pass/bytes/10"))  # the connection is still in step
        assert conn.read_response().body == masked(data(10))


def test_an_http10_client_gets_a_held_body_with_its_length(
    tmp_path: Path, upstream: Upstream
) -> None:
    response = raw_exchange(
        tmp_path, upstream, get("/masked/bytes/700?framing=chunked", version="1.0")
    )
    assert response.header("content-length") == "700"
    assert response.body == masked(data(700))


def test_responses_without_a_body_never_reach_the_body_hooks(
    tmp_path: Path, upstream: Upstream
) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway, gateway.client() as http:
        head = http.head("/masked/bytes/100")
        no_content = http.get("/masked/status/204")
        shouted_head = http.head("/shout/bytes/100")
    assert head.status_code == 200 and head.headers["content-length"] == "100"
    assert no_content.status_code == 204
    assert shouted_head.status_code == 200
    assert BUILT["mask-digits"][0].calls == 0  # type: ignore[attr-defined]
    assert BUILT["shout"][0].chunks == 0  # type: ignore[attr-defined]


# -- chunk by chunk --------------------------------------------------------------------------------


def test_a_streaming_policy_sees_every_chunk_and_the_end_once(
    tmp_path: Path, upstream: Upstream
) -> None:
    size = 300_000  # several reads from the upstream socket
    response = raw_exchange(tmp_path, upstream, get(f"/shout/bytes/{size}"))
    assert response.status == 200
    # The length changes on the way: the announced one is dropped and the body goes chunked.
    assert response.header("content-length") is None
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == data(size).upper() + b"\n-- shouted"
    shout = BUILT["shout"][0]
    assert shout.ends == 1  # type: ignore[attr-defined]
    assert shout.chunks >= 2  # type: ignore[attr-defined]


def test_a_streaming_policy_to_an_http10_client_ends_the_body_by_closing(
    tmp_path: Path, upstream: Upstream
) -> None:
    with (
        running_gateway(tmp_path, config(upstream)) as gateway,
        RawConnection(gateway.port) as conn,
    ):
        conn.send(get("/shout/bytes/1000", version="1.0"))
        response = conn.read_response()
        assert response.header("transfer-encoding") is None
        assert response.body == data(1000).upper() + b"\n-- shouted"
        assert conn.is_closed()


def test_whole_body_policies_run_first_then_the_streaming_ones_see_the_result(
    tmp_path: Path, upstream: Upstream
) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway, gateway.client() as http:
        response = http.get("/both/bytes/2000")
    expected = masked(data(2000)).upper() + b"\n-- shouted"
    assert response.content == expected
    assert response.headers["content-length"] == str(len(expected))


def test_a_route_without_body_policies_relays_the_upstream_framing_untouched(
    tmp_path: Path, upstream: Upstream
) -> None:
    response = raw_exchange(tmp_path, upstream, get("/plain/bytes/5000"))
    assert response.header("content-length") == "5000"
    assert response.body == data(5000)


# -- completion --------------------------------------------------------------------------------


def test_completion_tells_the_status_the_bytes_each_way_and_the_durations(
    tmp_path: Path, upstream: Upstream
) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway:
        recorder = BUILT["record"][0]
        assert isinstance(recorder, Recorder)
        request = (
            b"POST /recorded/upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
            b"Content-Length: 5\r\n\r\nhello"
        )
        with RawConnection(gateway.port) as conn:
            conn.send(request)
            raw = conn.rfile.read()  # the whole response, as bytes on the wire
        done = recorder.one()
    assert raw.startswith(b"HTTP/1.1 200")
    assert done.status == 200
    assert done.failure == ""
    assert done.bytes_in == len(request)
    assert done.bytes_out == len(raw)
    assert done.route is not None and done.route.name == "recorded"
    assert done.target == upstream.url.rstrip("/")
    assert done.seconds > 0.0
    assert 0.0 <= done.upstream_seconds <= done.seconds


def test_completion_follows_porticos_own_answer(tmp_path: Path, upstream: Upstream) -> None:
    """The recorder comes before auth in the pipeline: auth answers 401, and the recorder,
    whose on_request ran, hears how the exchange ended."""
    with running_gateway(tmp_path, config(upstream)) as gateway, gateway.client() as http:
        recorder = BUILT["record"][-1]
        assert isinstance(recorder, Recorder)
        assert http.get("/guarded/x").status_code == 401
        refused = recorder.one()
        assert http.get("/guarded/x", headers={"X-API-Key": KEY.key}).status_code == 200
        allowed = recorder.one()
    assert refused.status == 401 and refused.target == "" and refused.upstream_seconds == -1.0
    assert refused.consumer is None
    assert allowed.status == 200 and allowed.consumer == "t/c" and allowed.tenant == "t"


def test_completion_says_the_client_went_away(tmp_path: Path, upstream: Upstream) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway:
        recorder = BUILT["record"][0]
        assert isinstance(recorder, Recorder)
        with RawConnection(gateway.port) as conn:
            conn.send(get("/recorded/slow?head=0&body=3"))
            conn.read_head()  # the head and the first half of the body, then the client leaves
        done = recorder.one()
    assert done.failure == "client_closed"
    assert done.status == 200  # what the client was getting when it left


def test_completion_says_the_client_went_away_before_any_answer(
    tmp_path: Path, upstream: Upstream
) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway:
        recorder = BUILT["record"][0]
        assert isinstance(recorder, Recorder)
        with RawConnection(gateway.port) as conn:
            conn.send(get("/recorded/slow?head=3&body=0"))
            wait_for(lambda: upstream.count >= 1, what="the request upstream")
        done = recorder.one()
    assert done.failure == "client_closed"
    assert done.status == 499


def test_completion_says_the_upstream_broke_off_the_response(
    tmp_path: Path, upstream: Upstream
) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway:
        recorder = BUILT["record"][0]
        assert isinstance(recorder, Recorder)
        with RawConnection(gateway.port) as conn:
            conn.send(get("/recorded/drop?after=100"))
            status, _, headers, _ = conn.read_head()
            assert status == 200
            announced = int(dict((k.lower(), v) for k, v in headers)["content-length"])
            # Cut short: the only honest signal once the head is out.
            assert len(conn.rfile.read()) < announced
        done = recorder.one()
    assert done.failure == "upstream_broke"
    assert done.status == 200


def test_completion_is_timed_without_metrics_or_access_log(
    tmp_path: Path, upstream: Upstream
) -> None:
    """A route's on_complete gets real durations even when nothing process-wide is listening."""
    settings = config(upstream)
    settings["operations"] = {"metrics": False}
    with running_gateway(tmp_path, settings) as gateway, gateway.client() as http:
        recorder = BUILT["record"][0]
        assert isinstance(recorder, Recorder)
        assert http.get("/recorded/x").status_code == 200
        done = recorder.one()
    assert done.seconds > 0.0
    assert 0.0 <= done.upstream_seconds <= done.seconds


@pytest.mark.parametrize("route_name", ["masked", "shout"])
def test_a_route_with_body_hooks_asks_the_upstream_for_an_uncompressed_body(
    tmp_path: Path, upstream: Upstream, route_name: str
) -> None:
    """The way around a masking policy: ask for gzip, and the digits travel compressed, where
    no pattern matches them. Such a route never forwards Accept-Encoding."""
    with running_gateway(tmp_path, config(upstream)) as gateway, gateway.client() as http:
        response = http.get(f"/{route_name}/echo", headers={"Accept-Encoding": "gzip, br"})
        plain = http.get("/plain/echo", headers={"Accept-Encoding": "gzip, br"})
    assert response.status_code == 200
    received = [r.header("accept-encoding") for r in upstream.received]
    assert received == [None, "gzip, br"]  # the route without body hooks relays it
    assert plain.status_code == 200
