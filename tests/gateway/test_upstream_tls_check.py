"""``portico check`` of a service's upstream ``tls``: each unusable file, setting or combination
refused at its file, line and field, with one line that says what to do; ``verify: false``
accepted with a warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from tests.support.gateway import service, write_config
from tests.support.pki import CertificateAuthority, Issued

from portico.cli import main


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("pki"), "Backend CA")


@pytest.fixture(scope="module")
def client(ca: CertificateAuthority) -> Issued:
    return ca.issue_client("portico-gateway")


def config_with(tls: dict[str, Any], *targets: str) -> dict[str, Any]:
    return {
        "services": {"main": service(*(targets or ("https://orders.internal:8443",)), tls=tls)},
        "routes": [{"name": "all", "match": {"path": "/{rest:path}"}, "service": "main"}],
    }


def check(
    tmp_path: Path, config: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str, Path]:
    path = write_config(tmp_path / "portico.yaml", config)
    status = main(["check", str(path)])
    out, err = capsys.readouterr()
    return status, out, err, path


def line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def refused_at(
    tmp_path: Path,
    config: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    key: str,
    field: str,
    message: str,
) -> str:
    """Check refuses the file with one error, at the line of ``key`` and the path ``field``."""
    status, out, err, path = check(tmp_path, config, capsys)
    assert status == 1, out
    assert out == ""
    assert "1 error(s)" in err, err
    first = err.splitlines()[0]
    assert first.startswith(f"{path}:{line_of(path, key)}:"), first
    assert f": {field}: " in first, first
    assert message in first, first
    assert "Traceback" not in err
    return first


def test_a_trusted_ca_that_is_not_pem_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_bytes(b"\x30\x82\x01\x0a not PEM at all")
    refused_at(
        tmp_path,
        config_with({"trusted_ca": str(bad)}),
        capsys,
        "trusted_ca:",
        "services.main.tls.trusted_ca",
        "is not a PEM file of CA certificates (no -----BEGIN CERTIFICATE----- block",
    )


def test_a_trusted_ca_with_a_broken_certificate_block_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    refused_at(
        tmp_path,
        config_with({"trusted_ca": str(bad)}),
        capsys,
        "trusted_ca:",
        "services.main.tls.trusted_ca",
        "does not load as PEM CA certificates",
    )


def test_a_missing_file_is_refused_and_every_unreadable_one_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = {
        "trusted_ca": str(tmp_path / "nowhere" / "ca.pem"),
        "certificate": str(tmp_path / "nowhere" / "client.pem"),
        "private_key": str(tmp_path / "nowhere" / "client.key"),
    }
    status, _, err, path = check(tmp_path, config_with(tls), capsys)

    assert status == 1
    assert "3 error(s)" in err
    lines = err.splitlines()
    for index, key in enumerate(("trusted_ca", "certificate", "private_key")):
        assert lines[index].startswith(f"{path}:{line_of(path, key + ':')}:"), lines[index]
        assert lines[index].endswith(
            f": services.main.tls.{key}: cannot read '{tls[key]}': No such file or directory"
        ), lines[index]


def test_a_private_key_that_is_not_the_certificates_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ca: CertificateAuthority,
    client: Issued,
) -> None:
    other = ca.issue_client("someone-else")
    tls = {"certificate": str(client.cert_path), "private_key": str(other.key_path)}
    refused_at(
        tmp_path,
        config_with(tls),
        capsys,
        "private_key:",
        "services.main.tls.private_key",
        f"'{other.key_path}' is not the key of the certificate '{client.cert_path}'",
    )


@pytest.mark.parametrize("form", ["pkcs8", "traditional"])
def test_an_encrypted_private_key_is_refused_without_asking_for_a_passphrase(
    form: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    client: Issued,
) -> None:
    key = serialization.load_pem_private_key(client.key_path.read_bytes(), password=None)
    encrypted = tmp_path / "client.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8
            if form == "pkcs8"
            else serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(b"secret passphrase"),
        )
    )
    tls = {"certificate": str(client.cert_path), "private_key": str(encrypted)}
    refused_at(
        tmp_path,
        config_with(tls),
        capsys,
        "private_key:",
        "services.main.tls.private_key",
        "is encrypted: Portico reads unencrypted keys only",
    )


def test_a_certificate_file_holding_no_certificate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], client: Issued
) -> None:
    tls = {"certificate": str(client.key_path), "private_key": str(client.key_path)}
    refused_at(
        tmp_path,
        config_with(tls),
        capsys,
        "certificate:",
        "services.main.tls.certificate",
        "is not a PEM file of certificates",
    )


def test_tls_settings_on_a_plain_http_target_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca: CertificateAuthority
) -> None:
    config = config_with(
        {"trusted_ca": str(ca.cert_path)}, "https://a.internal:8443", "http://b.internal:8080"
    )
    refused_at(
        tmp_path,
        config,
        capsys,
        "http://b.internal",
        "services.main.targets[1]",
        "they apply to https:// targets only: this target would get plain text",
    )


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"certificate": "client.pem"}, "certificate and private_key go together"),
        ({"private_key": "client.key"}, "certificate and private_key go together"),
        (
            {"verify": False, "trusted_ca": "ca.pem"},
            "trusted_ca has no use with verify: false",
        ),
    ],
)
def test_settings_that_do_not_go_together_are_refused(
    tls: dict[str, Any], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A rule between keys is reported at the mapping that holds them.
    key = next(iter(tls))
    refused_at(tmp_path, config_with(tls), capsys, f"{key}:", "services.main.tls", message)


@pytest.mark.parametrize("value", ["false", "no", 0])
def test_verification_is_turned_off_by_a_yaml_boolean_only(
    value: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused_at(
        tmp_path,
        config_with({"verify": value}),
        capsys,
        "verify:",
        "services.main.tls.verify",
        "must be a valid boolean",
    )


@pytest.mark.parametrize(
    "name", ["https://orders.internal", "orders.internal:8443", "orders internal", "*.internal"]
)
def test_a_server_name_must_be_a_host_name(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused_at(
        tmp_path,
        config_with({"server_name": name}),
        capsys,
        "server_name:",
        "services.main.tls.server_name",
        "expected a host name such as orders.internal, without scheme, port or path",
    )


def test_verify_false_is_accepted_with_a_warning_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err, path = check(tmp_path, config_with({"verify": False}), capsys)

    assert status == 0, err
    assert out == f"{path}: ok (1 services, 1 routes; 1 warning(s))\n"
    assert err.splitlines() == [
        f"{path}:{line_of(path, 'verify:')}:15: warning: services.main.tls.verify: certificate "
        "verification is off: whoever answers at a target's address gets the traffic, "
        "credentials included; for a private CA, set trusted_ca instead"
    ]


def test_files_are_found_from_the_config_files_directory(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ca: CertificateAuthority,
    client: Issued,
) -> None:
    directory = tmp_path / "conf"
    (directory / "tls").mkdir(parents=True)
    (directory / "tls" / "ca.pem").write_bytes(ca.cert_path.read_bytes())
    (directory / "tls" / "client.pem").write_bytes(client.cert_path.read_bytes())
    (directory / "tls" / "client.key").write_bytes(client.key_path.read_bytes())
    tls = {
        "trusted_ca": "tls/ca.pem",
        "certificate": "tls/client.pem",
        "private_key": "tls/client.key",
        "server_name": "orders.internal",
        "min_version": "1.3",
    }
    monkeypatch.chdir(tmp_path)  # not the config file's directory

    status, out, err, _ = check(directory, config_with(tls), capsys)

    assert (status, err) == (0, "")
    assert out.endswith(": ok (1 services, 1 routes)\n")
