"""Path templates, route specificity and path normalisation (pure functions of the router)."""

from __future__ import annotations

import pytest

from portico.gateway.headers import Headers
from portico.gateway.router import (
    MethodNotAllowed,
    NoRoute,
    PathTemplate,
    RouteMatcher,
    Router,
    normalize_path,
)


def matcher(path: str, target: str, **kw: object) -> RouteMatcher[str]:
    return RouteMatcher(
        template=PathTemplate.parse(path),
        methods=frozenset(kw.get("methods", ())),  # type: ignore[arg-type]
        hosts=frozenset(kw.get("hosts", ())),  # type: ignore[arg-type]
        headers=tuple(kw.get("headers", ())),  # type: ignore[arg-type]
        target=target,
    )


def test_parameters_match_one_segment_and_are_percent_decoded() -> None:
    template = PathTemplate.parse("/v1/orders/{id}")
    assert template.match("/v1/orders/a%20b") == {"id": "a b"}
    assert template.match("/v1/orders/1/items") is None
    assert template.match("/v1/orders/") is None


def test_catch_all_matches_the_rest_including_empty() -> None:
    template = PathTemplate.parse("/files/{rest:path}")
    assert template.match("/files/a/b/c.txt") == {"rest": "a/b/c.txt"}
    assert template.match("/files/") == {"rest": ""}


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


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/v1/orders/../admin", "/v1/admin"),
        ("/v1/%2e%2e/%2E%2E/admin", "/admin"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/./b//c/", "/a/b/c/"),
        ("/a/b/..", "/a/"),
        ("/", "/"),
        ("/plain/path", "/plain/path"),
    ],
)
def test_dot_segments_are_removed_before_matching(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


def test_find_returns_none_instead_of_raising_on_a_miss() -> None:
    router = Router([matcher("/oauth2/token", "token", methods=["POST"])])
    assert router.find("POST", "h", "/oauth2/token", Headers()) == ("token", {})
    assert router.find("GET", "h", "/oauth2/token", Headers()) is None
    assert router.find("GET", "h", "/orders", Headers()) is None
