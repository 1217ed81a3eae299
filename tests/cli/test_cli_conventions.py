"""The ``portico`` command keeps the conventions of the ecosystem: ``--version``, global options
after the command, ``serve --listen``, help for every command and option, durations with a unit,
``portico init``, a log in text or JSON without the libraries' chatter, and commands that import
only what they use."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.support.gateway import (
    PorticoProcess,
    _portico_command,
    proxy_config,
    route,
    run_portico,
    service,
    wait_for,
    with_defaults,
    write_config,
)

from portico.cli import build_parser, main
from portico.cli.starter import STARTER
from portico.identity.cli import parse_duration


def portico(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_portico(*args, cwd=cwd, env=env)


def test_version_names_the_package_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = portico("--version", cwd=tmp_path)

    assert result.returncode == 0
    assert result.stdout.startswith(f"portico {version('portico')} (Python ")


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.extend(all_parsers(child))
    return found


def test_every_command_and_option_has_help() -> None:
    parsers = all_parsers(build_parser())
    # portico, serve, check, init, db, upgrade, keys x5, oauth x2, demo, admin tokens x3
    assert len(parsers) >= 17

    for parser in parsers:
        assert parser.description, f"{parser.prog} has no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{parser.prog} {choice.dest} has no help"
            else:
                assert action.help, f"{parser.prog} {action.option_strings or action.dest}"


def test_top_level_help_is_plain_text(tmp_path: Path) -> None:
    result = portico("--help", cwd=tmp_path)

    assert result.returncode == 0
    assert "``" not in result.stdout and ":mod:" not in result.stdout
    for command in ("serve", "check", "init", "db", "keys", "oauth", "demo"):
        assert f"    {command} " in result.stdout


def test_global_options_are_accepted_after_the_command(tmp_path: Path) -> None:
    path = write_config(tmp_path / "portico.yaml", proxy_config("http://127.0.0.1:9"))

    before = portico(
        "--log-level", "debug", "--log-format", "json", "check", str(path), cwd=tmp_path
    )
    after = portico(
        "check", str(path), "--log-level", "debug", "--log-format", "json", cwd=tmp_path
    )

    assert before.returncode == after.returncode == 0
    assert before.stdout == after.stdout


def test_an_option_after_the_command_wins_over_the_same_before_it() -> None:
    args = build_parser().parse_args(["--log-level", "error", "check", "--log-level", "debug"])

    assert args.log_level == "debug"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("2w", 1209600), ("1.5h", 5400)],
)
def test_durations_take_a_unit(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["3", "3 days", "d", "-1d", "1y", ""])
def test_a_duration_without_a_known_unit_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_keys_create_refuses_a_bare_number_of_seconds(tmp_path: Path) -> None:
    config = {**proxy_config("http://127.0.0.1:9"), "tenants": {"acme": {"consumers": {"b": {}}}}}
    path = write_config(tmp_path / "portico.yaml", config)

    result = portico(
        "keys", "create", "--consumer", "acme/b", "--expires", "3", "-c", str(path), cwd=tmp_path
    )

    assert result.returncode == 2
    assert "'3' has no unit: write a number and a unit, such as 90s" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "portico.db").exists()  # refused before anything was stored


def test_init_writes_a_starter_config_that_check_accepts(tmp_path: Path) -> None:
    result = portico("init", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    written = (tmp_path / "portico.yaml").read_text(encoding="utf-8")
    assert written == STARTER
    assert written.count("\n#") >= 10  # commented, for a person to read
    checked = portico("check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == "portico.yaml: ok (1 services, 1 routes)\n"


def test_init_refuses_to_replace_a_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "portico.yaml"
    path.write_text("# mine\n", encoding="utf-8")

    refused = portico("init", cwd=tmp_path)

    assert refused.returncode == 1
    assert refused.stderr.startswith("portico init: error: portico.yaml exists and was left as it")
    assert "--force" in refused.stderr
    assert path.read_text(encoding="utf-8") == "# mine\n"

    forced = portico("init", "--force", cwd=tmp_path)
    assert forced.returncode == 0
    assert path.read_text(encoding="utf-8") == STARTER


def test_serve_listen_overrides_the_config_and_survives_a_reload(tmp_path: Path) -> None:
    # PorticoProcess runs serve without options and reads an IPv4 banner: this test runs its own.
    config = with_defaults({"services": {"main": service("http://127.0.0.1:9")}, "routes": []})
    config["gateway"]["listen"] = "127.0.0.1:1"
    config["database"] = {"url": f"sqlite:///{tmp_path / 'portico.db'}"}
    path = write_config(tmp_path / "portico.yaml", config)
    log = (tmp_path / "portico.log").open("w+")
    process = subprocess.Popen(
        [_portico_command(), "serve", "-c", str(path), "--listen", "[::1]:0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("Portico gateway on http://[::1]:"), banner
        port = int(banner.rsplit(":", 1)[1])
        with httpx.Client(trust_env=False) as client:
            assert client.get(f"http://[::1]:{port}/nothing").status_code == 404
            config["routes"] = [route("open", "/open")]
            write_config(path, config)
            wait_for(lambda: "config reloaded" in Path(log.name).read_text(), what="the reload")
            assert client.get(f"http://[::1]:{port}/nothing").status_code == 404
        assert "gateway.listen changed" not in Path(log.name).read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_serve_listen_must_be_host_and_port(tmp_path: Path) -> None:
    result = portico("serve", "--listen", "8080", cwd=tmp_path)

    assert result.returncode == 2
    assert "'8080' is not HOST:PORT" in result.stderr


def json_records(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_the_log_is_json_for_machines_and_quiet_about_libraries(tmp_path: Path) -> None:
    """Not a terminal: JSON records; Alembic's migration chatter stays below info."""
    portico_process = PorticoProcess(tmp_path, proxy_config("http://127.0.0.1:9"))
    try:
        log = portico_process.log()
    finally:
        portico_process.stop()

    lines = [line for line in log.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"gateway code"} <= {str(r["message"]).split(":")[0] for r in records}
    assert all(r["level"] in {"debug", "info", "warning", "error"} for r in records)
    assert not [r for r in records if str(r["logger"]).startswith(("alembic", "httpx"))]


def test_the_text_log_is_for_people(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "portico.yaml",
        with_defaults(
            {**proxy_config("http://127.0.0.1:9"), "database": {"url": "sqlite:///x.db"}}
        ),
    )
    process = subprocess.Popen(
        [_portico_command(), "serve", "-c", str(path), "--log-format", "text"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.readline()  # the banner: started
    process.terminate()
    _, stderr = process.communicate(timeout=30)

    first = stderr.splitlines()[0]
    assert not first.startswith("{")
    assert " INFO portico: gateway code: " in first
    assert "alembic" not in stderr


def modules_after(*args: str, cwd: Path) -> set[str]:
    """The modules ``portico ARGS`` has imported when it finishes, from a real run."""
    code = (
        "import sys\n"
        "from portico.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return set(result.stderr.split())


HEAVY = ("sqlalchemy", "alembic", "httpx", "uvloop", "psycopg")
RUNNING_GATEWAY = (
    "portico.assembly",
    "portico.serving",
    "portico.store",
    "portico.gateway.app",
    "portico.gateway.connection",
    "portico.gateway.upstream",
    "portico.gateway.proxy",
    "portico.gateway.snapshot",
)
"""What serves requests: ``check`` validates a file and starts none of it."""
ADMIN_API = (
    "fastapi",
    "starlette",
    "uvicorn",
    "portico.admin.app",
    "portico.admin.listener",
    "portico.admin.endpoints",
    "portico.admin.tokens",
)
"""The admin API, its framework and server: ``check`` and ``--help`` load none of them, even for
a config that enables it (``portico admin`` registers its commands without them)."""
PARSERS = ("cryptography", "jwt", "http_message_signatures", "ssl", "asyncio")
"""What only credentials, signatures, TLS or I/O need."""
REQUEST_TIME = re.compile(
    r"portico\.policies\.\w+\.policy|portico\.identity\.(apikeys|jwt|signatures|mtls|oauth\.authn)"
)
"""The policies' and authentication methods' request-time code."""


def loaded_from(loaded: set[str], packages: tuple[str, ...]) -> set[str]:
    return {name for name in loaded for p in packages if name == p or name.startswith(p + ".")}


def test_help_imports_neither_pydantic_nor_the_store(tmp_path: Path) -> None:
    loaded = modules_after("--help", cwd=tmp_path)

    assert "argparse" in loaded  # the measurement works
    assert not loaded_from(
        loaded, (*HEAVY, *RUNNING_GATEWAY, *PARSERS, *ADMIN_API, "pydantic", "yaml")
    )


def test_check_imports_no_store_no_http_client_and_no_running_gateway(tmp_path: Path) -> None:
    config = {
        **proxy_config("http://127.0.0.1:9"),
        "tenants": {"acme": {"consumers": {"billing": {}}}},
    }
    config["routes"][0]["policies"] = [
        {"type": "auth", "methods": ["api_key", "oauth", "signature"], "api_key": {}},
        {"type": "rate-limit", "limit": 10, "per": "1m"},
        {"type": "headers", "request": {"set": {"X-A": "1"}}},
        {"type": "cors", "origins": ["https://app.example"]},
    ]
    config["identity"] = {"oauth": {"issuer": "https://portico.example"}}
    config["admin"] = {"listen": "127.0.0.1:9190"}
    path = write_config(tmp_path / "portico.yaml", config)

    loaded = modules_after("check", str(path), cwd=tmp_path)

    assert "portico.checking" in loaded and "pydantic" in loaded  # it did check the file
    assert {"portico.policies.auth", "portico.policies.rate_limit"} <= loaded  # and the policies
    assert not loaded_from(loaded, (*HEAVY, *RUNNING_GATEWAY, *ADMIN_API))
    # Policies and methods are checked by their settings models: their request-time code, and
    # the libraries only it needs, are imported when a gateway is built, not by `check`.
    assert not {name for name in loaded if REQUEST_TIME.fullmatch(name)}
    assert not loaded_from(loaded, ("http_message_signatures", "asyncio"))


def test_check_of_a_config_without_credentials_imports_no_crypto_and_no_event_loop(
    tmp_path: Path,
) -> None:
    """The starter config has no certificate, JWK Set, HTTPS listener or auth policy: nothing
    to parse with cryptography, PyJWT or ssl, and nothing asynchronous."""
    assert portico("init", cwd=tmp_path).returncode == 0

    loaded = modules_after("check", "portico.yaml", cwd=tmp_path)

    assert "portico.checking" in loaded and "yaml" in loaded  # it did check the file
    assert not loaded_from(loaded, (*HEAVY, *RUNNING_GATEWAY, *PARSERS))


def test_main_returns_the_failure_status_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "portico.yaml").write_text("# mine\n", encoding="utf-8")

    assert main(["init", str(tmp_path / "portico.yaml")]) == 1
    assert "exists and was left as it is" in capsys.readouterr().err


OPENTELEMETRY_SDK = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto")
"""What tracing needs (the API alone is imported by FastAPI, which the admin API loads)."""


def modules_after_serving(tmp_path: Path, config: dict[str, object]) -> set[str]:
    """The modules a real ``portico serve`` has imported once it served a request and stopped
    (SIGTERM)."""
    path = write_config(tmp_path / "portico.yaml", with_defaults(config))
    listing = tmp_path / "modules.txt"
    code = (
        "import sys\n"
        "from portico.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"open({str(listing)!r}, 'w').write('\\n'.join(sorted(sys.modules)))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "-c", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert "Portico gateway on http://" in banner, banner
        url = "http://" + banner.split("http://", 1)[1].split()[0]
        assert httpx.get(url + "/anything", trust_env=False).status_code == 502  # port 9: none
    finally:
        process.terminate()
        process.communicate(timeout=30)
    return set(listing.read_text(encoding="utf-8").split())


def test_a_gateway_without_tracing_imports_no_opentelemetry_sdk(tmp_path: Path) -> None:
    loaded = modules_after_serving(tmp_path, proxy_config("http://127.0.0.1:9"))

    assert "portico.gateway.connection" in loaded  # it did serve
    assert not loaded_from(loaded, OPENTELEMETRY_SDK)


def test_a_gateway_with_tracing_imports_the_sdk(tmp_path: Path) -> None:
    config = {
        **proxy_config("http://127.0.0.1:9"),
        "tracing": {"enabled": True, "endpoint": "http://127.0.0.1:9", "shutdown_timeout": "1s"},
    }

    loaded = modules_after_serving(tmp_path, config)

    assert {"opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http"} <= loaded


def test_check_of_a_traced_config_imports_no_opentelemetry_sdk(tmp_path: Path) -> None:
    config = {**proxy_config("http://127.0.0.1:9"), "tracing": {"enabled": True}}
    path = write_config(tmp_path / "portico.yaml", config)

    loaded = modules_after("check", str(path), cwd=tmp_path)

    assert "portico.checking" in loaded
    assert not loaded_from(loaded, ("opentelemetry", "portico.observability.otel"))
