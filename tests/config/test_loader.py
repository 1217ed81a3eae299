"""Loading ``portico.yaml`` from real files: values, interpolation, and errors at file:line."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from portico.assembly import load_config
from portico.config.errors import ConfigError, ConfigIssue
from portico.config.model import PorticoConfig

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

VALID = """\
gateway:
  listen: 0.0.0.0:9000
  max_body_size: 10MiB
  header_timeout: 500ms
services:
  orders:
    targets:
      - url: http://orders-1.internal:8000
        weight: 3
      - http://orders-2.internal:8000
    timeouts: {connect: 250ms, read: 2m}
    health_check:
      active: {interval: 1.5s}
routes:
  - name: order-by-id
    match:
      path: /v1/orders/{id}
      methods: [get, post]
      hosts: [API.Example.com]
    service: orders
    max_body_size: 512KiB
  - name: orders
    match: {path: "/v1/{rest:path}"}
    service: orders
    strip_prefix: /v1
"""


def write(tmp_path: Path, text: str, name: str = "portico.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def issues_of(path: Path, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={} if env is None else env)
    return caught.value.issues


def where(issue: ConfigIssue) -> tuple[int | None, str]:
    return issue.line, issue.path


def doc_block(marker: str) -> str:
    """The fenced block that follows ``<!-- example: marker -->`` in the configuration docs."""
    after = DOCS.read_text(encoding="utf-8").split(f"<!-- example: {marker} -->", 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


def test_valid_config_loads_with_units_normalised(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), env={})

    assert config.gateway.listen.host == "0.0.0.0"
    assert config.gateway.listen.port == 9000
    assert config.gateway.max_body_size == 10 * 1024 * 1024
    assert config.gateway.header_timeout == 0.5
    orders = config.services["orders"]
    assert [(t.url, t.weight) for t in orders.targets] == [
        ("http://orders-1.internal:8000", 3),
        ("http://orders-2.internal:8000", 1),
    ]
    assert orders.timeouts.connect == 0.25
    assert orders.timeouts.read == 120.0
    assert orders.health_check.active is not None
    assert orders.health_check.active.interval == 1.5
    first, second = config.routes
    assert first.match.methods == ("GET", "POST")
    assert first.match.hosts == ("api.example.com",)
    assert first.max_body_size == 512 * 1024
    assert second.match.path == "/v1/{rest:path}"


def test_empty_file_is_a_valid_empty_config(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}) == PorticoConfig()
    assert load_config(write(tmp_path, "# nothing yet\n", "c.yaml"), env={}) == PorticoConfig()


def test_every_error_is_listed_at_once_with_its_file_line_and_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        gateway:
          max_body_size: lots
        services:
          orders:
            targets:
              - url: ftp://orders.internal
            retries: many
        routes:
          - name: orders
            match:
              path: /v1/orders
            service: orders
            preserve_host: maybe
        """,
    )

    issues = issues_of(path)

    assert [where(i) for i in issues] == [
        (2, "gateway.max_body_size"),
        (6, "services.orders.targets[0].url"),
        (7, "services.orders.retries"),
        (13, "routes[0].preserve_host"),
    ]
    assert {i.file for i in issues} == {str(path)}
    assert issues[0].column == 18
    assert issues[1].message == "expected an http:// or https:// URL with a host"


def test_error_string_lists_one_issue_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n  access_log: sometimes\n  header_timeout: -1s\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    assert str(caught.value).splitlines() == [
        f"{path}:2:15: gateway.access_log: must be a valid boolean, unable to interpret input",
        f"{path}:3:19: gateway.header_timeout: expected a duration such as 500ms, 2s or 1m",
    ]


def test_config_error_survives_pickling_with_its_issues(tmp_path: Path) -> None:
    path = write(tmp_path, "database: {url: 5}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    copy = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - our own object

    assert copy.issues == caught.value.issues
    assert str(copy) == str(caught.value)


def test_unknown_key_is_reported_at_the_key_with_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        services:
          orders:
            targets: [http://orders.internal]
            retry: 3
        routing: []
        """,
    )

    issues = issues_of(path)

    assert [(i.line, i.column, i.path, i.message) for i in issues] == [
        (4, 5, "services.orders.retry", "unknown key 'retry'; did you mean 'retries'?"),
        (5, 1, "routing", "unknown key 'routing'; did you mean 'routes'?"),
    ]


def test_unknown_key_without_a_close_match_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "database:\n  dsn: postgresql://db/portico\n")

    (issue,) = issues_of(path)

    assert where(issue) == (2, "database.dsn")
    assert issue.message == "unknown key 'dsn'; expected one of: url, secrets_key_file"


def test_wrong_type_is_reported_at_the_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        services:
          orders:
            targets: http://orders.internal
            timeouts: [1s, 2s]
            keepalive: {max_idle: several}
        """,
    )

    issues = issues_of(path)

    assert [(where(i), i.message) for i in issues] == [
        ((3, "services.orders.targets"), "expected a list"),
        ((4, "services.orders.timeouts"), "expected a mapping"),
        (
            (5, "services.orders.keepalive.max_idle"),
            "must be a valid integer, unable to parse string as an integer",
        ),
    ]


def test_missing_required_key_is_reported_at_the_mapping_that_lacks_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        services:
          orders: {targets: [http://orders.internal]}
        routes:
          - name: orders
            match:
              methods: [GET]
            service: orders
        """,
    )

    (issue,) = issues_of(path)

    assert (issue.line, issue.column) == (5, 5)
    assert issue.path == "routes[0].match.path"
    assert issue.message == "missing required key"


def test_route_naming_an_unknown_service_is_reported_at_its_service_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        services:
          orders: {targets: [http://orders.internal]}
        routes:
          - name: orders
            match: {path: /orders}
            service: orders
          - name: billing
            match: {path: /billing}
            service: biling
        """,
    )

    (issue,) = issues_of(path)

    assert (issue.line, issue.column, issue.path) == (9, 14, "routes[1].service")
    assert issue.message == "unknown service 'biling'"


def test_policy_settings_errors_are_located_inside_the_policy(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        services:
          orders: {targets: [http://orders.internal]}
        routes:
          - name: orders
            match: {path: /orders}
            service: orders
            policies:
              - type: headers
                request:
                  sett: {X-Tenant: acme}
                  remove: ["bad header"]
              - type: carrier-pigeon
        """,
    )

    issues = issues_of(path)

    # The catalogue of known policy types grows with the product: compare what comes before it.
    assert [(where(i), i.message.split(" (known:")[0]) for i in issues] == [
        (
            (10, "routes[0].policies[0].request.sett"),
            "unknown key 'sett'; did you mean 'set'?",
        ),
        (
            (11, "routes[0].policies[0].request.remove[0]"),
            "'bad header' is not a valid HTTP header name",
        ),
        ((12, "routes[0].policies[1].type"), "unknown policy type 'carrier-pigeon'"),
    ]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("/v1/orders/{id", "segment '{id' is not a literal, {name} or {name:path}"),
        ("v1/orders", "a path template must start with /"),
        ("/v1/{rest:path}/items", "{rest:path} must be the last segment"),
    ],
)
def test_invalid_path_template_is_reported_at_the_path(
    tmp_path: Path, template: str, message: str
) -> None:
    path = write(
        tmp_path,
        f"""\
        services:
          orders: {{targets: [http://orders.internal]}}
        routes:
          - name: orders
            match:
              path: "{template}"
            service: orders
        """,
    )

    (issue,) = issues_of(path)

    assert where(issue) == (6, "routes[0].match.path")
    assert issue.message == message


def test_upstream_path_must_be_a_template_using_parameters_of_the_match(tmp_path: Path) -> None:
    bad_template = write(
        tmp_path,
        """\
        services:
          orders: {targets: [http://orders.internal]}
        routes:
          - name: orders
            match: {path: "/v1/orders/{id}"}
            service: orders
            upstream_path: "orders/{id}"
        """,
    )
    unknown_parameter = write(
        tmp_path,
        """\
        services:
          orders: {targets: [http://orders.internal]}
        routes:
          - name: orders
            match: {path: "/v1/orders/{id}"}
            service: orders
            upstream_path: "/orders/{order_id}"
        """,
        "other.yaml",
    )

    (first,) = issues_of(bad_template)
    (second,) = issues_of(unknown_parameter)

    assert (where(first), first.message) == (
        (7, "routes[0].upstream_path"),
        "a path template must start with /",
    )
    assert (where(second), second.message) == (
        (7, "routes[0].upstream_path"),
        "parameter 'order_id' is not defined by match.path",
    )


def test_duplicate_key_is_reported_at_its_second_occurrence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        services:
          orders:
            targets: [http://orders-1.internal]
            retries: 2
            targets: [http://orders-2.internal]
        """,
    )

    (issue,) = issues_of(path)

    assert (issue.line, issue.column, issue.path) == (5, 5, "services.orders.targets")
    assert issue.message == "duplicate key 'targets', first defined on line 3"


def test_value_replaced_by_a_duplicate_key_still_reports_its_missing_variable(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "database:\n  url: ${DATABASE_URL}\n  url: sqlite:///x.db\n")

    issues = issues_of(path)

    assert [(where(i), i.message.split(" (")[0]) for i in issues] == [
        ((2, "database.url"), "environment variable DATABASE_URL is not set"),
        ((3, "database.url"), "duplicate key 'url', first defined on line 2"),
    ]


def test_bad_service_name_is_reported_at_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "services:\n  orders:\n    targets: [http://a]\n  'my orders':\n")

    issues = issues_of(path)

    assert [(where(i), i.message) for i in issues] == [
        ((4, 'services["my orders"]'), "a name may only contain letters, digits, '_', '.' and '-'"),
        ((4, 'services["my orders"]'), "expected a mapping"),
    ]


def test_one_failing_target_is_one_issue(tmp_path: Path) -> None:
    # Pydantic also reports the list as too short once the failing item is dropped.
    path = write(tmp_path, "services:\n  orders:\n    targets: [ftp://orders.internal]\n")

    (issue,) = issues_of(path)

    assert where(issue) == (3, "services.orders.targets[0]")


def test_a_target_url_with_credentials_is_refused_without_showing_them(tmp_path: Path) -> None:
    """They would reach the upstream in the Host field; the message never repeats the URL."""
    path = write(tmp_path, "services:\n  orders:\n    targets: ['${TARGET}']\n")

    (issue,) = issues_of(path, env={"TARGET": "http://svc:s3cret@orders.internal:8080"})

    assert where(issue) == (3, "services.orders.targets[0]")
    assert "cannot carry credentials" in issue.message
    assert "s3cret" not in str(issue)


def test_environment_variables_are_interpolated_before_validation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        gateway:
          listen: "${HOST}:${PORT}"
          header_timeout: ${HEADER_TIMEOUT}
        database:
          url: postgresql+psycopg://portico:${DB_PASSWORD}@db/portico
        """,
    )
    env = {"HOST": "10.1.2.3", "PORT": "9090", "HEADER_TIMEOUT": "750ms", "DB_PASSWORD": "pw"}

    config = load_config(path, env=env)

    assert (config.gateway.listen.host, config.gateway.listen.port) == ("10.1.2.3", 9090)
    assert config.gateway.header_timeout == 0.75
    assert config.database.url == "postgresql+psycopg://portico:pw@db/portico"


def test_os_environ_is_used_when_no_environment_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTICO_TEST_DATABASE_URL", "sqlite:///from-env.db")
    path = write(tmp_path, "database: {url: '${PORTICO_TEST_DATABASE_URL}'}\n")

    assert load_config(path).database.url == "sqlite:///from-env.db"


def test_default_is_used_when_the_variable_is_unset_or_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "database:\n  url: ${DATABASE_URL:-sqlite:///default.db}\n")

    assert load_config(path, env={}).database.url == "sqlite:///default.db"
    assert load_config(path, env={"DATABASE_URL": ""}).database.url == "sqlite:///default.db"
    assert load_config(path, env={"DATABASE_URL": "sqlite:///x.db"}).database.url == (
        "sqlite:///x.db"
    )


def test_double_dollar_brace_is_a_literal_dollar_brace(tmp_path: Path) -> None:
    path = write(tmp_path, "database:\n  url: sqlite:///$${NAME}-${NAME}.db\n")

    assert load_config(path, env={"NAME": "prod"}).database.url == "sqlite:///${NAME}-prod.db"


def test_missing_variable_is_reported_by_name_at_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        services:
          orders:
            targets:
              - ${ORDERS_URL}
              - url: http://${ORDERS_HOST}:8000
        """,
    )

    issues = issues_of(path, env={"ORDERS_HOST": "orders.internal"})

    (issue,) = issues
    assert (issue.line, issue.path) == (4, "services.orders.targets[0]")
    assert issue.message.startswith("environment variable ORDERS_URL is not set")


def test_interpolated_values_never_appear_in_error_messages(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        services:
          orders:
            targets: ["${TARGET}"]
        routes:
          - name: orders
            match: {path: "/orders", methods: ["${METHOD}"]}
            service: orders
          - name: ${SECRET_NAME}
            match: {path: "/other"}
            service: "${SERVICE}"
        """,
    )
    env = {
        "TARGET": "ftp://user:hunter2@orders.internal",
        "METHOD": "s3cretmethod",
        "SECRET_NAME": "name with spaces",
        "SERVICE": "svc-token-123",
    }

    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)

    text = str(caught.value)
    assert [where(i) for i in caught.value.issues] == [
        (3, "services.orders.targets[0]"),
        (6, "routes[0].match.methods"),
        (8, "routes[1].name"),
    ]
    assert "unknown HTTP method '***'" in text
    for value in env.values():
        assert value.lower() not in text.lower()
        assert value not in repr(caught.value.issues)


def test_secrets_stay_out_of_cross_section_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        services:
          orders: {targets: [http://orders.internal]}
        routes:
          - name: orders
            match: {path: "/orders"}
            service: ${SERVICE}
        """,
    )

    (issue,) = issues_of(path, env={"SERVICE": "hunter2"})

    assert (where(issue), issue.message) == ((6, "routes[0].service"), "unknown service '***'")


def test_malformed_variable_reference_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "database:\n  url: 'sqlite:///${NAME'\n  other: ${1X}\n")

    issues = issues_of(path)

    assert [(where(i), i.message) for i in issues] == [
        ((2, "database.url"), "unterminated ${ (write $${ for a literal ${)"),
        ((3, "database.other"), "invalid reference ${1X}: expected ${NAME} or ${NAME:-default}"),
    ]


def test_yaml_syntax_error_is_reported_alone_with_its_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        gateway:
          listen: 0.0.0.0:8080
        services:
          orders: {targets: [http://orders.internal}
        routes: {unknown: 1}
        """,
    )

    (issue,) = issues_of(path)

    assert (issue.file, issue.line, issue.column, issue.path) == (str(path), 4, 44, "")
    assert issue.message.startswith("invalid YAML: expected ',' or ']', but got '}'")


def test_tab_indentation_is_a_syntax_error_at_the_tab(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n\taccess_log: true\n")

    (issue,) = issues_of(path)

    assert (issue.line, issue.column) == (2, 1)
    assert "'\\t'" in issue.message


def test_a_deeply_nested_document_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """libyaml's own composer recurses in C and overflows the stack on such a file; the loader
    uses only libyaml's parser, under PyYAML's composer, which stops at the recursion limit."""
    depth = 100_000
    (issue,) = issues_of(write(tmp_path, "routes: " + "[" * depth + "]" * depth + "\n"))

    assert issue.message == "the document is nested too deeply"


def test_control_character_is_reported_at_its_position(tmp_path: Path) -> None:
    (issue,) = issues_of(write(tmp_path, "gateway:\n  access_log: tr\x07ue\n"))

    assert (issue.line, issue.column) == (2, 17)
    assert issue.message == "character '\\x07' (U+0007) is not allowed in YAML"


@pytest.mark.parametrize(
    ("text", "found"),
    [("- services\n- routes\n", "a list"), ("just text\n", "a single value")],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    (issue,) = issues_of(write(tmp_path, text))

    assert (issue.line, issue.column, issue.path) == (1, 1, "")
    assert issue.message.startswith("the top level must be a mapping of sections (gateway, ")
    assert issue.message.endswith(f"), not {found}")


def test_more_than_one_yaml_document_is_an_error(tmp_path: Path) -> None:
    (issue,) = issues_of(write(tmp_path, "gateway: {}\n---\nroutes: []\n"))

    assert issue.line == 2
    assert "expected a single document" in issue.message


def test_anchors_and_merge_keys_are_followed_with_explicit_keys_winning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        services:
          orders: &defaults
            targets: [http://orders.internal]
            retries: 3
            timeouts: {read: 5s}
          invoices:
            <<: *defaults
            targets: [http://invoices.internal]
            ballancer: least_connections
        """,
    )

    (issue,) = issues_of(path)
    assert where(issue) == (9, "services.invoices.ballancer")

    path.write_text(path.read_text().replace("ballancer", "balancer"))
    invoices = load_config(path, env={}).services["invoices"]
    assert invoices.targets[0].url == "http://invoices.internal"
    assert (invoices.retries, invoices.timeouts.read, invoices.balancer) == (
        3,
        5.0,
        "least_connections",
    )


def test_alias_to_its_own_container_is_an_error(tmp_path: Path) -> None:
    (issue,) = issues_of(write(tmp_path, "services: &loop\n  orders: *loop\n"))

    assert where(issue) == (1, "services.orders")
    assert issue.message == "an alias refers to a mapping or list that contains it"


def test_missing_file_is_one_issue(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"

    (issue,) = issues_of(missing)

    assert issue == ConfigIssue(str(missing), None, None, "", "file not found")
    assert str(issue) == f"{missing}: file not found"


def test_directory_is_one_issue(tmp_path: Path) -> None:
    (issue,) = issues_of(tmp_path)

    assert (issue.file, issue.line, issue.message) == (
        str(tmp_path),
        None,
        "is a directory, not a file",
    )


def test_file_that_is_not_utf8_is_reported_at_the_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "portico.yaml"
    path.write_bytes(b"gateway:\n  access_log: caf\xe9\n")

    (issue,) = issues_of(path)

    assert (issue.line, issue.column, issue.message) == (2, 18, "the file is not valid UTF-8 text")


def test_complete_example_in_the_documentation_is_valid(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, doc_block("complete")), env={})

    assert set(config.services) == {"orders", "billing"}
    assert [r.name for r in config.routes] == ["order-by-id", "orders", "billing-partners"]
    assert config.services["billing"].circuit_breaker is None


@pytest.mark.parametrize("example", ["broken", "cross"])
def test_error_examples_in_the_documentation_are_what_the_loader_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example: str
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, doc_block(example))
    # The documented output is `portico check`: the command line, the issues, then a count.
    documented = doc_block(f"{example}-output").splitlines()[1:-1]

    with pytest.raises(ConfigError) as caught:
        load_config("portico.yaml", env={})

    assert str(caught.value).splitlines() == documented
