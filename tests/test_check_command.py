"""``portico check`` reports what any capability would refuse, at its file, line and field;
``serve`` and a reload refuse the same file with the same message, and no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.support.gateway import (
    PorticoProcess,
    _portico_command,
    route,
    service,
    wait_for,
    with_defaults,
    write_config,
)

from portico.cli import main

MTLS_WITHOUT_TLS = (
    "routes[1].policies[0].methods[1]: mtls is accepted, but the gateway does not ask for client "
    "certificates: set gateway.tls with client_ca and client_certificate"
)


def mtls_without_tls() -> dict[str, object]:
    return {
        "services": {"main": service("http://127.0.0.1:9")},
        "routes": [
            route("open", "/open"),
            route(
                "orders",
                "/orders",
                policies=[{"type": "auth", "methods": ["api_key", "mtls"]}],
            ),
        ],
    }


def line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_check_reports_a_route_accepting_mtls_without_a_tls_listener(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "portico.yaml", mtls_without_tls())

    assert main(["check", str(path)]) == 1

    err = capsys.readouterr().err
    assert f"{path}:{line_of(path, '- mtls')}:" in err
    assert MTLS_WITHOUT_TLS in err
    assert "1 error(s)" in err


def test_serve_refuses_mtls_without_a_tls_listener_with_the_check_message(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path / "portico.yaml", with_defaults(mtls_without_tls()))

    served = subprocess.run(
        [_portico_command(), "serve", "-c", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert served.returncode == 1
    assert f"{path}:{line_of(path, '- mtls')}:" in served.stderr
    assert MTLS_WITHOUT_TLS in served.stderr
    assert "Traceback" not in served.stderr


def test_reload_refuses_mtls_without_a_tls_listener_and_keeps_serving(tmp_path: Path) -> None:
    valid = mtls_without_tls()
    valid["routes"] = valid["routes"][:1]  # type: ignore[index]
    portico = PorticoProcess(tmp_path, valid)
    try:
        portico.write(mtls_without_tls())
        wait_for(
            lambda: "reload refused" in portico.log(),
            timeout=15,
            interval=0.1,
            what="the refused reload in the log",
        )
        log = portico.log()
        assert f"{portico.config_path}:{line_of(portico.config_path, '- mtls')}:" in log
        assert MTLS_WITHOUT_TLS in log
        assert "Traceback" not in log
        assert portico.process.poll() is None
    finally:
        portico.stop()


def test_check_reports_every_error_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "services": {
            "main": service("http://127.0.0.1:9"),
            "broken": {"targets": []},
        },
        "routes": [
            route("typo", "/typo", timeout="1s"),
            route("ghost", "/ghost", service="nowhere"),
            route("orders", "/orders", policies=[{"type": "auth", "methods": ["mtls"]}]),
            route("uses-broken", "/broken", service="broken"),
            route("pigeon", "/pigeon", policies=[{"type": "carrier-pigeon"}]),
        ],
    }
    path = write_config(tmp_path / "portico.yaml", config)

    assert main(["check", str(path)]) == 1

    err = capsys.readouterr().err
    # Errors in the entries themselves...
    assert "routes[0].timeout: unknown key 'timeout'" in err
    assert "services.broken.targets: expected at least 1 item" in err
    # ...do not hide the checks that span sections, run on the other entries...
    assert "routes[1].service: unknown service 'nowhere'" in err
    assert "routes[2].policies[0].methods[0]: mtls is accepted" in err
    assert "routes[4].policies[0].type: unknown policy type 'carrier-pigeon'" in err
    # ...but what only follows from an invalid entry is not reported as another error.
    assert "unknown service 'broken'" not in err
    assert "5 error(s)" in err


def test_check_and_serve_refuse_a_tls_certificate_that_cannot_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "gateway": {
            "tls": {
                "listen": "127.0.0.1:0",
                "certificate": str(tmp_path / "server.pem"),
                "private_key": str(tmp_path / "server.key"),
            }
        },
        "services": {"main": service("http://127.0.0.1:9")},
        "routes": [route("open", "/open")],
    }
    path = write_config(tmp_path / "portico.yaml", with_defaults(config))
    line = line_of(path, "certificate:")
    expected = f"gateway.tls.certificate: cannot read '{tmp_path / 'server.pem'}'"

    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{line}:" in err
    assert expected in err

    served = subprocess.run(
        [_portico_command(), "serve", "-c", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert served.returncode == 1
    assert expected in served.stderr
    assert "Traceback" not in served.stderr
