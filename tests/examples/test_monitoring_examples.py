"""examples/prometheus.yml, its recording rules and examples/grafana/portico.json, run for real.

promtool checks the scrape config and the rules. Then a real ``portico serve --workers 2``, its
shared state in a real Redis, takes a steady mix of traffic: successes, upstream failures, auth
failures of every reason, rate-limit, concurrency, validation and mask refusals, cache hits,
idempotent replays, a request no route matches; and a few requests while Redis is away. A real
Prometheus started from examples/prometheus.yml, with only its target's address changed, scrapes
Portico and records the rules. Every PromQL expression of the dashboard runs through Prometheus'
HTTP API with its variables substituted as Grafana substitutes them, with the values the
variables' own ``label_values`` queries return: each must run and return series, and the core
panels must count what the traffic did. The metric and label names they use must be ones
Portico exports.
"""

from __future__ import annotations

import collections
import json
import math
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.support.gateway import ROOT, Config, PorticoProcess, route, service, wait_for
from tests.support.prometheus import PrometheusServer, promtool, running_prometheus
from tests.support.redis import RedisServer, redis_for_session
from tests.support.upstreams import Upstream, refused_url

from portico.identity.apikeys import generate_key

EXAMPLES = ROOT / "examples"
SCRAPE_CONFIG = EXAMPLES / "prometheus.yml"
RULES = EXAMPLES / "portico.rules.yml"
DASHBOARD = EXAMPLES / "grafana" / "portico.json"
DEMO_TARGET = "'127.0.0.1:9180'"
"""The operations listener of ``make demo``, as examples/prometheus.yml names it."""

RATE_INTERVAL = "1m"
"""Grafana's ``$__rate_interval`` with a 15 s scrape interval: four scrapes."""
DATA_TIMEOUT = 180.0
"""Two scrapes 15 s apart, then an evaluation of the rules, after Prometheus' start."""

KEY = generate_key()
VALIDATED = {
    "openapi": "3.1.0",
    "info": {"title": "Items", "version": "1"},
    "paths": {
        "/items/{id}": {
            "get": {
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9]+$"},
                    }
                ],
                "responses": {"200": {"description": "An item."}},
            }
        }
    },
}


def portico_config(upstream: Upstream, redis: RedisServer) -> Config:
    api_key = {"type": "auth", "methods": ["api_key"]}
    return {
        # Rate limits, cached responses and idempotency keys shared by the gateway processes.
        "redis": {"url": redis.url},
        "services": {
            "orders": service(upstream.url, retries=0),
            # Nothing listens there: a connect error, then the breaker stays open.
            "gone": service(
                refused_url(),
                retries=0,
                circuit_breaker={"failure_threshold": 1, "reset_timeout": "10m"},
            ),
            # One target of two refuses connections: its breaker lets a trial through every
            # 2 s, which fails and is retried on the other target.
            "pair": service(
                refused_url(),
                upstream.url,
                retries=1,
                balancer="round_robin",
                circuit_breaker={"failure_threshold": 1, "reset_timeout": "2s"},
            ),
            "items": service(upstream.url, openapi="items.openapi.yaml"),
            "slow": service(upstream.url, policies=[{"type": "concurrency", "max": 1}]),
        },
        "tenants": {
            "acme": {
                "consumers": {
                    "shop": {
                        "scopes": ["orders:read"],
                        "api_keys": [{"id": KEY.id, "sha256": KEY.sha256}],
                    }
                }
            }
        },
        "routes": [
            route("orders", "/orders/{rest:path}", "orders", policies=[api_key]),
            route(
                "admin",
                "/admin/{rest:path}",
                "orders",
                policies=[{**api_key, "scopes": {"all_of": ["orders:write"]}}],
            ),
            route(
                "legacy",
                "/legacy/{rest:path}",
                "orders",
                policies=[{"type": "deprecation", "since": "2026-01-01"}, api_key],
            ),
            route("gone", "/gone/{rest:path}", "gone"),
            route("pair", "/pair/{rest:path}", "pair"),
            route(
                "limited",
                "/limited/{rest:path}",
                "orders",
                policies=[
                    {
                        "type": "rate-limit",
                        "limits": [{"name": "burst", "limit": 2, "window": "1m", "by": ["ip"]}],
                    }
                ],
            ),
            route(
                "cached",
                "/cached/{rest:path}",
                "orders",
                policies=[{"type": "cache", "ttl": "30s", "scope": "public"}],
            ),
            route(
                "validated",
                "/validated/{rest:path}",
                "items",
                strip_prefix="/validated",
                policies=[{"type": "validation"}],
            ),
            route(
                "masked",
                "/masked/{rest:path}",
                "orders",
                strip_prefix="/masked",
                policies=[{"type": "mask", "remove": ["headers"]}],
            ),
            route(
                "lenient",
                "/lenient/{rest:path}",
                "orders",
                strip_prefix="/lenient",
                policies=[{"type": "mask", "remove": ["headers"], "non_json": "pass"}],
            ),
            route(
                "idempotent",
                "/idempotent/{rest:path}",
                "orders",
                methods=["POST"],
                policies=[{"type": "idempotency", "required": True}],
            ),
            route("slow", "/slow/{rest:path}", "slow", strip_prefix="/slow"),
        ],
    }


BAD_KEY = {"X-API-Key": "pk_nope_nope"}
GOOD_KEY = {"X-API-Key": KEY.key}
MIX: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("GET", "/orders/1", GOOD_KEY),
    ("GET", "/orders/1", {}),  # 401: auth failure, reason missing
    ("GET", "/orders/1", BAD_KEY),  # 401: invalid
    ("GET", "/admin/1", GOOD_KEY),  # 403: scope
    ("GET", "/legacy/1", GOOD_KEY),  # deprecated, consumer acme/shop
    ("GET", "/legacy/1", {}),  # deprecated, no consumer; 401
    ("GET", "/gone/1", {}),  # 502, then 503: the breaker is open
    ("GET", "/pair/1", {}),  # now and then a retry on the other target
    ("GET", "/limited/1", {}),  # 429 after two a minute
    ("GET", "/cached/1", {}),  # a miss, then hits
    ("GET", "/validated/items/1", {}),
    ("GET", "/validated/items/one", {}),  # 400: the path parameter's pattern
    ("GET", "/masked/orders", {}),  # JSON: masked
    ("GET", "/masked/bytes/10", {}),  # 502: not JSON
    ("GET", "/lenient/bytes/10", {}),  # not JSON, let through unchecked
    ("POST", "/idempotent/orders", {"Idempotency-Key": "order-1"}),  # stored, then replayed
    ("POST", "/idempotent/orders", {}),  # 400: missing
    ("GET", "/nowhere", {}),  # 404 before any route
)


class Traffic:
    """The mix above, one request every 50 ms on a new connection each (so both gateway
    processes take some), until stopped; the statuses seen are counted."""

    def __init__(self, process: PorticoProcess) -> None:
        self.process = process
        self.statuses: collections.Counter[int] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> None:
        self._burst_on_the_concurrency_limit()
        self._thread.start()

    def without_redis(self, redis: RedisServer) -> None:
        """The routes with state in Redis called while it is away: failures counted."""
        redis.stop()
        try:
            with self.process.client(timeout=10) as http:
                for method, path, headers in MIX:
                    if path.startswith(("/limited/", "/cached/", "/idempotent/")):
                        self._send(http, method, path, headers)
        finally:
            redis.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _send(self, http: httpx.Client, method: str, path: str, headers: dict[str, str]) -> None:
        body = b'{"sku": "BK-ENGINE"}' if method == "POST" else None
        try:
            status = http.request(method, path, headers=headers, content=body).status_code
        except httpx.HTTPError:
            status = 0
        self.statuses[status] += 1

    def _run(self) -> None:
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        with self.process.client(limits=no_reuse, timeout=10) as http:
            while not self._stop.is_set():
                for method, path, headers in MIX:
                    if self._stop.wait(0.05):
                        return
                    self._send(http, method, path, headers)

    def _burst_on_the_concurrency_limit(self) -> None:
        """Six slow requests at once on a service of one place per process: at least three
        reach one of the two processes, so at least two are refused (503)."""

        def one() -> None:
            with self.process.client(timeout=10) as http:
                self._send(http, "GET", "/slow/slow?head=1", {})

        senders = [threading.Thread(target=one) for _ in range(6)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=30)


@dataclass
class Stack:
    portico: PorticoProcess
    prometheus: PrometheusServer
    traffic: Traffic


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("monitoring")
    (base / "portico").mkdir()
    (base / "portico" / "items.openapi.yaml").write_text(yaml.safe_dump(VALIDATED))
    with redis_for_session() as redis:
        upstream = Upstream("orders")
        try:
            config = portico_config(upstream, redis)
            portico = PorticoProcess(base / "portico", config, ("--workers", "2"))
            try:
                yield from _monitored(base, portico, redis)
            finally:
                portico.stop()
        finally:
            upstream.close()


def _monitored(base: Path, portico: PorticoProcess, redis: RedisServer) -> Iterator[Stack]:
    traffic = Traffic(portico)
    try:
        # One reload, for the reloads panel: SIGHUP makes the supervisor reload every process.
        portico.signal(signal.SIGHUP)
        wait_for(
            lambda: 'portico_config_reloads_total{result="success"}' in scrape(portico),
            timeout=30,
            what="the reload to be counted",
        )
        traffic.without_redis(redis)
        traffic.start()
        config = SCRAPE_CONFIG.read_text(encoding="utf-8")
        assert config.count(DEMO_TARGET) == 1, "examples/prometheus.yml names one target"
        (base / "prometheus").mkdir()
        target = f"'127.0.0.1:{portico.operations_port}'"
        (base / "prometheus" / "prometheus.yml").write_text(config.replace(DEMO_TARGET, target))
        shutil.copy(RULES, base / "prometheus" / RULES.name)
        with running_prometheus(base / "prometheus" / "prometheus.yml", base / "data") as server:
            wait_for(
                lambda: _latency_is_recorded(server),
                timeout=DATA_TIMEOUT,
                interval=1,
                what="two scrapes of Portico and an evaluation of the recording rules",
            )
            yield Stack(portico, server, traffic)
    finally:
        traffic.stop()


def scrape(portico: PorticoProcess) -> str:
    response = httpx.get(portico.operations_url + "/metrics", trust_env=False, timeout=10)
    assert response.status_code == 200
    return response.text


# -- reading the dashboard --------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    panel: str
    expr: str
    legend: str


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return out


def queries() -> list[Query]:
    return [
        Query(panel["title"], target["expr"], target.get("legendFormat", ""))
        for panel in panels()
        for target in panel.get("targets", [])
    ]


def variables() -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = dashboard()["templating"]["list"]
    return listed


def _regex_escape(value: str) -> str:
    """A value in a regex matcher, escaped as Grafana's Prometheus data source escapes it."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def _formatted(values: list[str]) -> str:
    """Several values of a multi-value variable, as Grafana writes them into a query."""
    escaped = [_regex_escape(value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(text: str, values: dict[str, str]) -> str:
    text = text.replace("$__rate_interval", RATE_INTERVAL)
    # Longest names first: $route must not eat the start of a longer name.
    for name in sorted(values, key=len, reverse=True):
        text = text.replace(f"${name}", values[name])
    assert "$" not in text, f"a variable left in {text}"
    return text


_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$")


def variable_values(prometheus: PrometheusServer) -> tuple[dict[str, str], dict[str, str]]:
    """Each query variable's substitution: with All selected, and with its first value alone.
    The values are what its ``label_values`` query returns, run as Grafana runs it."""
    every: dict[str, str] = {}
    first: dict[str, str] = {}
    for variable in variables():
        if variable["type"] != "query":
            continue
        match = _LABEL_VALUES.match(variable["query"]["query"])
        assert match, f"${variable['name']}: a label_values(selector, label) query"
        values = prometheus.label_values(match.group(2), substitute(match.group(1), every))
        assert values, f"${variable['name']}: {variable['query']['query']} lists nothing"
        first[variable["name"]] = _formatted(values[:1])
        if variable["includeAll"]:
            every[variable["name"]] = variable.get("allValue") or _formatted(values)
        else:
            every[variable["name"]] = _formatted(values[:1])
    return every, first


def exported_names(text: str) -> dict[str, set[str]]:
    """The metric names of a scrape (families without samples included), with the label names
    of their samples."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        for suffix in suffixes.get(family.type, [""]):
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def recorded_names() -> set[str]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {rule["record"] for group in rules["groups"] for rule in group["rules"]}


def rule_expressions() -> list[str]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


_RECORDED = re.compile(r"[A-Za-z_]\w*:[\w:]*")
_EXPORTED = re.compile(r"\b(?:portico|process)_\w+")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def names_in(expr: str) -> set[str]:
    """The metric names an expression reads: recorded ones (with a colon) and Portico's."""
    recorded = set(_RECORDED.findall(expr))
    return recorded | set(_EXPORTED.findall(_RECORDED.sub(" ", expr)))


# -- the tests --------------------------------------------------------------------------------


def test_promtool_accepts_the_scrape_config_and_its_recording_rules() -> None:
    checked = promtool("check", "config", str(SCRAPE_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout, checked.stdout
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in rules.stdout, rules.stdout


def test_the_dashboard_reads_the_chosen_prometheus_and_its_panels_do_not_overlap() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39  # Grafana 11 and later
    assert board["uid"] and board["title"]
    by_name = {variable["name"]: variable for variable in variables()}
    assert by_name["datasource"]["type"] == "datasource"
    assert by_name["datasource"]["query"] == "prometheus"
    assert {"job", "service", "route", "consumer"} <= set(by_name)
    chosen = {"type": "prometheus", "uid": "${datasource}"}
    cells: dict[tuple[int, int], str] = {}
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels():
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        for x in range(position["x"], position["x"] + position["w"]):
            for y in range(position["y"], position["y"] + position["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == chosen, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == chosen, panel["title"]
    for variable in variables():
        if variable["type"] == "query":
            assert variable["datasource"] == chosen, variable["name"]


def test_the_variables_list_the_job_services_routes_and_consumers(stack: Stack) -> None:
    prometheus = stack.prometheus
    every, _ = variable_values(prometheus)
    assert prometheus.result('up{job="portico"}')[0]["value"][1] == "1"
    assert every["job"] == "portico"
    assert {"orders", "gone", "pair", "items", "slow"} <= set(every["service"][1:-1].split("|"))
    routes = set(every["route"][1:-1].split("|"))
    assert {"orders", "admin", "legacy", "gone", "limited", "cached", "slow"} <= routes
    assert "" not in routes
    consumers = prometheus.label_values("consumer", "portico_deprecated_requests_total")
    assert "acme/shop" in consumers


def _all_listed(prometheus: PrometheusServer) -> tuple[dict[str, str], dict[str, str]] | None:
    try:
        return variable_values(prometheus)
    except AssertionError:
        return None


def test_every_query_of_the_dashboard_runs_and_returns_data(stack: Stack) -> None:
    prometheus = stack.prometheus
    every, _ = variable_values(prometheus)

    def answers() -> dict[Query, list[dict[str, Any]]]:
        return {q: prometheus.result(substitute(q.expr, every)) for q in queries()}

    deadline = time.monotonic() + DATA_TIMEOUT
    while True:
        answered = answers()
        empty = [f"{q.panel}: {q.expr}" for q in queries() if not answered[q]]
        if not empty:
            break
        if time.monotonic() > deadline:
            pytest.fail("no data, after the traffic, from:\n" + "\n".join(empty))
        time.sleep(2)

    # A legend names labels the series have; an empty label (route="" of a service-wide
    # limit) is absent from Prometheus' answer, but Portico exports it.
    exported = exported_names(scrape(stack.portico))
    for query, series in answered.items():
        known = {label for s in series for label in s["metric"]}
        for name in names_in(query.expr):
            known |= exported.get(name, set())
        for label in _LEGEND.findall(query.legend):
            assert label in known, f"{query.panel}: the legend names {label}, not {known}"

    def value_of(panel: str, **labels: str) -> float:
        query = next(q for q in queries() if q.panel == panel)
        found = [
            float(s["value"][1])
            for s in prometheus.result(substitute(query.expr, every))
            if all(s["metric"].get(k) == v for k, v in labels.items())
        ]
        assert found, f"{panel} {labels}"
        return sum(found)

    # The core panels count what the traffic did.
    assert value_of("Requests per second") > 0
    assert value_of("Requests per second by route", route="orders") > 0
    assert value_of("5xx ratio by route", route="gone") == 1
    assert 0 < value_of("4xx ratio by route", route="orders") < 1
    for reason in ("missing", "invalid", "scope"):
        assert value_of("Auth failures by reason", reason=reason) > 0
    assert value_of("Auth failures by route and method", route="admin", method="api_key") > 0
    for percentile in ("p50", "p95", "p99"):
        p = value_of(f"Latency {percentile} by route", route="orders")
        assert 0 < p <= 60, (percentile, p)  # within the histogram's buckets
    assert value_of("Targets out of rotation") >= 1  # gone's only target
    assert value_of("Open circuit breakers") >= 1
    assert value_of("Circuit breakers not closed", service="gone", state="open") >= 1
    assert value_of("Upstream errors by service and kind", service="pair", kind="connect") > 0
    assert value_of("Retries by service", service="pair") > 0
    assert value_of("Rate-limited (429) by route and limit", route="limited", limit="burst") > 0
    assert value_of("Cache lookups by result", result="hit") > 0
    assert value_of("Answered before routing", method="GET", status_class="4xx") > 0
    assert value_of("Gateway processes") > 0
    # What the traffic was answered: successes, Portico's refusals, upstream failures.
    assert {200, 400, 401, 403, 404, 429, 502, 503} <= set(stack.traffic.statuses)


def _latency_is_recorded(prometheus: PrometheusServer) -> bool:
    """The recording rules have run over two scrapes: the p99 of a route is a number."""
    listed = _all_listed(prometheus)
    if listed is None:
        return False
    query = next(q for q in queries() if q.panel == "Latency p99 by route")
    series = prometheus.result(substitute(query.expr, listed[0]))
    values = [float(s["value"][1]) for s in series if s["metric"].get("route") == "orders"]
    return bool(values) and not math.isnan(values[0])


def test_every_query_runs_with_one_value_of_each_variable(stack: Stack) -> None:
    prometheus = stack.prometheus
    _, first = variable_values(prometheus)
    for query in queries():
        expr = substitute(query.expr, first)
        answer = prometheus.query(expr)
        assert answer["status"] == "success", f"{query.panel}: {expr}: {answer}"


def test_every_metric_and_label_the_dashboard_reads_is_one_portico_exports(
    stack: Stack,
) -> None:
    exported = exported_names(scrape(stack.portico))
    recorded = recorded_names()
    for expr in rule_expressions():
        for name in names_in(expr):
            assert name in exported, f"{RULES.name}: {name} is not in Portico's /metrics"
    used: set[str] = set()
    for query in queries():
        for name in names_in(query.expr):
            used.add(name)
            if ":" in name:
                assert name in recorded, f"{query.panel}: {name} is recorded by no rule"
            else:
                assert name in exported, f"{query.panel}: {name} is not in Portico's /metrics"
        for name, matchers in _SELECTOR.findall(query.expr):
            assert name in exported or name in recorded or name == "up", (query.panel, name)
            stored = set(stack.prometheus.label_names(name))
            assert stored, f"{query.panel}: Prometheus stores no {name}"
            for label in _MATCHER.findall(matchers):
                assert label in stored, f"{query.panel}: {name} has no label {label}: {stored}"
    # The dashboard's panels cover the metrics the issue names, and the recorded series.
    for name in (
        "portico_requests_total",
        "portico_request_duration_seconds_bucket",
        "portico_upstream_target_healthy",
        "portico_circuit_breaker_state",
        "portico_upstream_errors_total",
        "portico_auth_failures_total",
        "portico_rate_limited_requests_total",
        "portico_cache_lookups_total",
        *recorded,
    ):
        assert name in used, f"no panel reads {name}"
