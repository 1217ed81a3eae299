"""The path and Host rules the gateway decides on (docs/security.md), as pure functions."""

from __future__ import annotations

import pytest

from portico.gateway.uri import BadTarget, canonical_path, encode_path, host_name, split_absolute


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/plain/path", "/plain/path"),
        ("/", "/"),
        ("/v1/orders/../admin", "/v1/admin"),
        ("/v1/%2e%2e/%2E%2E/admin", "/admin"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/./b//c/", "/a/b/c/"),
        ("/a/b/..", "/a/"),
        ("/partner/%6frders", "/partner/orders"),
        ("/%61dmin/x", "/admin/x"),
        ("/x/%2e%2e/partner/orders", "/partner/orders"),
        ("/caf%C3%A9", "/café"),
        ("/a%20b", "/a b"),
        ("/a%25b", "/a%b"),
        ("/files/report.v2.json", "/files/report.v2.json"),
    ],
)
def test_paths_are_decoded_once_and_dot_segments_removed(raw: str, canonical: str) -> None:
    assert canonical_path(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "/x/..%2fpartner/orders",
        "/partner%2Forders",
        "/partner%5corders",
        "/partner\\orders",
        "/partner/orders%00",
        "/partner/orders%0d%0aX-Injected:%20yes",
        "/partner/orders%7f",
        "/partner/orders;x=1",
        "/partner/orders%3bx=1",
        "/x/%252e%252e/partner/orders",
        "/x/%252Fpartner",
        "/x/%255c",
        "/bad%zzescape",
        "/trailing%",
        "/not-utf8%ff",
        "/raw-latin1-\xe9",
    ],
)
def test_paths_a_backend_could_read_another_way_are_refused(raw: str) -> None:
    with pytest.raises(BadTarget):
        canonical_path(raw)


def test_the_upstream_gets_the_decoded_path_encoded_again_canonically() -> None:
    for raw in ("/caf%C3%A9/a%20b", "/%7Euser/x%3Ay", "/a%25b", "/q%3Fnot-a-query"):
        decoded = canonical_path(raw)
        encoded = encode_path(decoded)
        # Decoding what goes upstream gives back exactly the path the route was chosen by.
        assert canonical_path(encoded) == decoded
    assert encode_path("/~user/x:y") == "/~user/x:y"
    assert encode_path("/q?x#y") == "/q%3Fx%23y"


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("admin.local", "admin.local"),
        ("ADMIN.Local", "admin.local"),
        ("admin.local.", "admin.local"),
        ("admin.local:8080", "admin.local"),
        ("admin.local.:80", "admin.local"),
        ("127.0.0.1:1", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("my_host", "my_host"),
    ],
)
def test_valid_hosts_compare_without_case_port_or_trailing_dot(value: str, name: str) -> None:
    assert host_name(value) == name


@pytest.mark.parametrize(
    "value",
    [
        "a b",
        "x/../y",
        'x"y',
        "x\\",
        "admin.local..",
        ".admin.local",
        "user@admin.local",
        "admin.local:99999",
        "admin.local:8o",
        "[::1",
        "%61dmin.local",
        "",
    ],
)
def test_invalid_hosts_are_refused(value: str) -> None:
    assert host_name(value) is None


def test_absolute_targets_give_authority_path_and_query() -> None:
    assert split_absolute("http://x/a") == ("x", "/a", "")
    assert split_absolute("HTTPS://x:8443/a/b?c=1#frag") == ("x:8443", "/a/b", "c=1")
    assert split_absolute("http://x") == ("x", "/", "")
    assert split_absolute("http://x?q") == ("x", "/", "q")
    for bad in ("http://user:pw@x/a", "ftp://x/a", "x:443", "http:///a", "//x/a"):
        with pytest.raises(BadTarget):
            split_absolute(bad)


def test_encoding_matches_urllib_quote_with_the_pchar_set() -> None:
    from urllib.parse import quote

    samples = [
        "/caf\u00e9 x/\u65e5\u672c",
        '/a%b?c#d[e]{f}|g^h`i\\j"k<l>m',
        "/~user/x:y@z!$&'()*+,=",
        "/\u00a0;",
    ]
    for sample in samples:
        assert encode_path(sample) == quote(sample, safe="/:@!$&'()*+,=-._~")
