"""Path templates and route specificity (pure functions of the router); the path rules
themselves are in test_uri.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portico.gateway.headers import Headers
from portico.gateway.router import (
    MethodNotAllowed,
    NoRoute,
    PathTemplate,
    RouteMatcher,
    Router,
)


def matcher(path: str, target: str, **kw: object) -> RouteMatcher[str]:
    return RouteMatcher(
        template=PathTemplate.parse(path),
        methods=frozenset(kw.get("methods", ())),  # type: ignore[arg-type]
        hosts=frozenset(kw.get("hosts", ())),  # type: ignore[arg-type]
        headers=tuple(kw.get("headers", ())),  # type: ignore[arg-type]
        target=target,
    )


def test_parameters_match_one_segment_of_the_decoded_path_and_are_never_decoded_again() -> None:
    template = PathTemplate.parse("/v1/orders/{id}")
    assert template.match("/v1/orders/a b") == {"id": "a b"}
    # The path is decoded once before matching: a %20 left in it was %2520 on the wire.
    assert template.match("/v1/orders/a%20b") == {"id": "a%20b"}
    assert template.match("/v1/orders/1/items") is None
    assert template.match("/v1/orders/") is None


def test_one_trailing_slash_is_insignificant() -> None:
    assert PathTemplate.parse("/partner/orders").match("/partner/orders/") == {}
    assert PathTemplate.parse("/partner/orders/").match("/partner/orders") == {}
    assert PathTemplate.parse("/orders/{id}").match("/orders/7/") == {"id": "7"}
    assert PathTemplate.parse("/partner/orders").match("/partner/orders//") is None
    assert PathTemplate.parse("/").match("/") == {}


def test_catch_all_matches_the_rest_including_empty() -> None:
    template = PathTemplate.parse("/files/{rest:path}")
    assert template.match("/files/a/b/c.txt") == {"rest": "a/b/c.txt"}
    assert template.match("/files/") == {"rest": ""}
    # Without the slash too: else /files would fall to a less specific route.
    assert template.match("/files") == {"rest": ""}
    assert template.match("/filesx") is None
    assert PathTemplate.parse("/{rest:path}").match("/") == {"rest": ""}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("orders", "must start with /"),
        ("/orders/{id", "is not a literal"),
        ("/a/{x}/{x}", "appears twice"),
        ("/a/{rest:path}/b", "must be the last segment"),
        ("/a/{x:int}", "is not a literal"),
    ],
)
def test_invalid_templates_are_refused_with_a_reason(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathTemplate.parse(template)


def test_expand_fills_parameters() -> None:
    assert PathTemplate.parse("/orders/{id}/{rest:path}").expand({"id": "7", "rest": "a/b"}) == (
        "/orders/7/a/b"
    )


def test_most_specific_route_wins_regardless_of_order() -> None:
    router = Router(
        [
            matcher("/{rest:path}", "catch-all"),
            matcher("/v1/orders/{id}", "by-id"),
            matcher("/v1/orders/latest", "literal"),
            matcher("/v1/{kind}/{id}", "generic"),
        ]
    )
    empty = Headers()
    assert router.match("GET", "h", "/v1/orders/latest", empty)[0] == "literal"
    assert router.match("GET", "h", "/v1/orders/9", empty) == ("by-id", {"id": "9"})
    assert router.match("GET", "h", "/v1/users/9", empty)[0] == "generic"
    assert router.match("GET", "h", "/other", empty)[0] == "catch-all"


def test_host_header_and_method_constraints_select_routes() -> None:
    router = Router(
        [
            matcher("/orders/{id}", "v1"),
            matcher("/orders/{id}", "v2", headers=[("x-api-version", "2")]),
            matcher("/orders/{id}", "admin-host", hosts=["admin.example"]),
        ]
    )
    assert router.match("GET", "api", "/orders/1", Headers())[0] == "v1"
    v2 = Headers([("x-api-version", "2")])
    assert router.match("GET", "api", "/orders/1", v2)[0] == "v2"
    assert router.match("GET", "admin.example", "/orders/1", Headers())[0] == "admin-host"


def test_method_mismatch_reports_allowed_methods_and_no_match_is_no_route() -> None:
    router = Router(
        [matcher("/a", "get", methods=["GET"]), matcher("/a", "post", methods=["POST", "PUT"])]
    )
    with pytest.raises(MethodNotAllowed) as exc:
        router.match("DELETE", "h", "/a", Headers())
    assert exc.value.allowed == ("GET", "POST", "PUT")
    with pytest.raises(NoRoute):
        router.match("GET", "h", "/b", Headers())


def test_find_returns_none_instead_of_raising_on_a_miss() -> None:
    router = Router([matcher("/oauth2/token", "token", methods=["POST"])])
    assert router.find("POST", "h", "/oauth2/token", Headers()) == ("token", {})
    assert router.find("GET", "h", "/orders", Headers()) is None
    # A path it owns with another method is not a miss: it is the endpoint's 405.
    with pytest.raises(MethodNotAllowed):
        router.find("GET", "h", "/oauth2/token", Headers())


@pytest.mark.parametrize("method", ["HEAD", "DELETE", "PUT", "PATCH", "POST", "OPTIONS"])
def test_a_method_the_path_owner_refuses_never_falls_to_a_catch_all(method: str) -> None:
    router = Router(
        [
            matcher("/{rest:path}", "public"),
            matcher("/partner/orders", "partner", methods=["GET"]),
            matcher("/partner/{kind}", "kinds", methods=[method]),
        ]
    )
    with pytest.raises(MethodNotAllowed) as exc:
        router.match(method, "h", "/partner/orders", Headers())
    assert exc.value.allowed == ("GET",)
    assert router.match(method, "h", "/partner/other", Headers())[0] == "kinds"


def test_routes_share_methods_only_with_the_same_path_hosts_and_headers() -> None:
    router = Router(
        [
            matcher("/{rest:path}", "public"),
            matcher("/x/{id}", "admin-read", methods=["GET"], hosts=["admin.local"]),
            matcher("/x/{key}", "admin-write", methods=["POST"], hosts=["admin.local"]),
            matcher("/x/{key}", "write", methods=["PUT"]),
        ]
    )
    assert router.match("GET", "admin.local", "/x/1", Headers())[0] == "admin-read"
    assert router.match("POST", "admin.local", "/x/1", Headers())[0] == "admin-write"
    # The admin host owns /x/{id}: PUT there is 405, never the route without the host.
    with pytest.raises(MethodNotAllowed) as exc:
        router.match("PUT", "admin.local", "/x/1", Headers())
    assert exc.value.allowed == ("GET", "POST")
    assert router.match("PUT", "other", "/x/1", Headers())[0] == "write"


_TEMPLATES = [
    "/",
    "/{rest:path}",
    "/v1",
    "/v1/{rest:path}",
    "/v1/orders/{id}",
    "/v1/orders/latest",
    "/{tenant}/orders",
    "/{tenant}/{kind}/{id}",
    "/webhooks/v1/endpoints/{id}/deliveries",
    "/webhooks/v1/events",
    "/hooks/partner",
    "/v1/",
    "/{x}",
]


def _first_match(templates: list[str], path: str) -> str | None:
    """The reference: every template tried, most specific first (what the router did before it
    looked templates up by their first segment)."""
    ordered = sorted((matcher(t, t) for t in templates), key=RouteMatcher.specificity, reverse=True)
    return next((m.target for m in ordered if m.template.match(path) is not None), None)


@given(
    st.lists(st.sampled_from(_TEMPLATES), min_size=1, max_size=len(_TEMPLATES), unique=True),
    st.lists(
        st.sampled_from(["", "v1", "orders", "latest", "webhooks", "hooks", "partner", "x"]),
        max_size=4,
    ),
    st.booleans(),
)
def test_looking_templates_up_by_first_segment_finds_what_trying_each_finds(
    templates: list[str], segments: list[str], trailing: bool
) -> None:
    router = Router([matcher(t, t) for t in templates])
    path = "/" + "/".join(segments) + ("/" if trailing and segments else "")
    found = router.find("GET", "h", path, Headers())
    assert (None if found is None else found[0]) == _first_match(templates, path)
