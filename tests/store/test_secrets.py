"""Sealing and opening secrets, and where their keys come from: the ways around them refused.

Real AES-GCM (``cryptography``), real key files with their modes, real environment text. A
secret sealed for one place opens there only, with the key that sealed it; anything else --
another row, an edited byte, a key id changed, another key, a newer format, plain text -- is an
error that says which secret and what to do, never a wrong plaintext.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from pathlib import Path

import pytest
from tests.store.conftest import secrets_with

from portico.store.secrets import (
    BadSecretsKey,
    Secrets,
    SecretsKeyMissing,
    SecretTampered,
    UnknownSecretFormat,
    UnknownSecretsKey,
    open_secrets,
)
from portico.store.secrets.envelope import PREFIX_LENGTH, key_id_of
from portico.store.secrets.keys import generate_key_text, parse_key
from portico.store.secrets.sources import add_key, default_key_file, write_key_file

ROW_A = "signing_keys.sealed_private_key/kid-a"
ROW_B = "signing_keys.sealed_private_key/kid-b"
PLAINTEXT = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIB...\n-----END PRIVATE KEY-----\n"
UNSET = {"PORTICO_SECRETS_KEY": ""}
"""An environment without the variable, whatever the one running the tests has."""


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'portico.db'}"


def flip(sealed: str, position: int) -> str:
    """``sealed`` with one byte of its binary payload changed."""
    payload = bytearray(base64.urlsafe_b64decode(sealed[PREFIX_LENGTH:] + "=="))
    payload[position] ^= 0x01
    return sealed[:PREFIX_LENGTH] + base64.urlsafe_b64encode(bytes(payload)).decode().rstrip("=")


# -- sealing and opening ----------------------------------------------------------------------


def test_a_sealed_secret_opens_for_its_place_and_hides_its_plaintext(secrets: Secrets) -> None:
    sealed = secrets.seal(PLAINTEXT, ROW_A)

    assert secrets.open(sealed, ROW_A) == PLAINTEXT
    assert b"PRIVATE KEY" not in sealed.encode() and "MC4CAQ" not in sealed
    keys = secrets.configured()
    assert keys is not None
    assert re.fullmatch(r"portico:v1:[0-9a-f]{16}:[A-Za-z0-9_-]+", sealed)
    assert key_id_of(sealed) == keys.newest.id


def test_the_same_secret_sealed_twice_gives_two_ciphertexts(secrets: Secrets) -> None:
    first, second = secrets.seal(PLAINTEXT, ROW_A), secrets.seal(PLAINTEXT, ROW_A)

    assert first != second  # a data key and nonces of their own each time
    assert secrets.open(first, ROW_A) == secrets.open(second, ROW_A) == PLAINTEXT


def test_a_secret_copied_into_another_row_does_not_open(secrets: Secrets) -> None:
    sealed = secrets.seal(PLAINTEXT, ROW_A)

    with pytest.raises(SecretTampered, match=r"signing_keys.sealed_private_key/kid-b"):
        secrets.open(sealed, ROW_B)
    with pytest.raises(SecretTampered):
        secrets.open(sealed, "webhook_endpoints.sealed_secret/kid-a")  # another table


@pytest.mark.parametrize(
    "position",
    [0, 11, 12, 40, 59, 60, 71, 72, -17, -1],
    ids=[
        "wrap nonce",
        "wrap nonce end",
        "wrapped key",
        "wrapped key middle",
        "wrapped key tag",
        "nonce",
        "nonce end",
        "ciphertext",
        "tag start",
        "tag end",
    ],
)
def test_a_secret_altered_anywhere_does_not_open(secrets: Secrets, position: int) -> None:
    sealed = secrets.seal(PLAINTEXT, ROW_A)

    with pytest.raises(SecretTampered, match="altered or damaged"):
        secrets.open(flip(sealed, position), ROW_A)


def test_a_truncated_or_garbled_secret_does_not_open(secrets: Secrets) -> None:
    sealed = secrets.seal(PLAINTEXT, ROW_A)

    for damaged in (sealed[:-10], sealed[: PREFIX_LENGTH + 20], sealed + "AAAA", sealed + "!"):
        with pytest.raises(SecretTampered):
            secrets.open(damaged, ROW_A)


def test_a_key_id_edited_to_another_configured_key_does_not_open() -> None:
    new, old = generate_key_text(), generate_key_text()
    secrets = secrets_with(new, old)
    sealed = secrets.seal(PLAINTEXT, ROW_A)
    relabelled = sealed.replace(parse_key(new).id, parse_key(old).id, 1)

    with pytest.raises(SecretTampered):
        secrets.open(relabelled, ROW_A)


def test_a_secret_of_another_key_is_refused_naming_the_key() -> None:
    sealed = secrets_with(generate_key_text()).seal(PLAINTEXT, ROW_A)
    other = secrets_with(generate_key_text())

    with pytest.raises(UnknownSecretsKey) as refused:
        other.open(sealed, ROW_A)
    message = str(refused.value)
    assert key_id_of(sealed) in message and ROW_A in message
    assert "configure that key too" in message


def test_the_newest_key_seals_and_every_configured_key_opens() -> None:
    old, new = generate_key_text(), generate_key_text()
    sealed_before = secrets_with(old).seal(PLAINTEXT, ROW_A)
    during = secrets_with(new, old)

    sealed_during = during.seal(PLAINTEXT, ROW_A)

    assert key_id_of(sealed_during) == parse_key(new).id
    assert during.open(sealed_before, ROW_A) == during.open(sealed_during, ROW_A) == PLAINTEXT


def test_plain_text_and_unknown_formats_are_refused(secrets: Secrets) -> None:
    with pytest.raises(SecretTampered, match="not sealed"):
        secrets.open(PLAINTEXT.decode(), ROW_A)
    newer = "portico:v2:" + secrets.seal(PLAINTEXT, ROW_A)[len("portico:v1:") :]
    with pytest.raises(UnknownSecretFormat, match=r"'v2'.*newer Portico"):
        secrets.open(newer, ROW_A)


# -- the keys ---------------------------------------------------------------------------------


def test_a_key_is_32_bytes_in_either_base64_alphabet() -> None:
    raw = os.urandom(32)
    standard = base64.b64encode(raw).decode()  # as `openssl rand -base64 32` writes it
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")

    assert parse_key(standard).id == parse_key(urlsafe).id
    assert re.fullmatch(r"[0-9a-f]{16}", parse_key(standard).id)
    assert parse_key(generate_key_text()).id != parse_key(standard).id


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(os.urandom(16)).decode(),
        base64.b64encode(os.urandom(48)).decode(),
        "correct horse battery staple",
        "",
    ],
)
def test_what_is_not_a_key_is_refused_without_being_repeated(text: str) -> None:
    with pytest.raises(ValueError, match="not a secrets key") as refused:
        parse_key(text)
    assert not text or text not in str(refused.value)


def test_the_environment_gives_several_keys_newest_first(tmp_path: Path) -> None:
    new, old = generate_key_text(), generate_key_text()

    secrets = open_secrets(sqlite_url(tmp_path), env={"PORTICO_SECRETS_KEY": f"{new}, {old}\n"})

    keys = secrets.configured()
    assert keys is not None and keys.ids == (parse_key(new).id, parse_key(old).id)
    assert keys.origin == "PORTICO_SECRETS_KEY"
    assert not default_key_file(sqlite_url(tmp_path)).exists()  # type: ignore[union-attr]


def test_a_bad_key_in_the_environment_is_named_by_its_place_not_its_text(tmp_path: Path) -> None:
    bad = "x" * 44

    with pytest.raises(BadSecretsKey, match="PORTICO_SECRETS_KEY, key 2: not a secrets key") as e:
        open_secrets(
            sqlite_url(tmp_path), env={"PORTICO_SECRETS_KEY": f"{generate_key_text()},{bad}"}
        )
    assert bad not in str(e.value)


def test_a_key_in_the_environment_and_a_key_file_together_are_refused(tmp_path: Path) -> None:
    env = {"PORTICO_SECRETS_KEY": generate_key_text()}

    with pytest.raises(BadSecretsKey, match="in one place only"):
        open_secrets(sqlite_url(tmp_path), str(tmp_path / "k"), env=env)


# -- the key file beside a SQLite database ----------------------------------------------------


def test_the_key_file_beside_a_sqlite_database_is_made_when_first_needed(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    secrets = open_secrets(url, env=UNSET)
    path = tmp_path / "portico-secrets.key"
    assert default_key_file(url) == path

    assert secrets.configured() is None and not path.exists()  # nothing made to look
    sealed = secrets.seal(PLAINTEXT, ROW_A)

    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().startswith("# Portico's secrets key (docs/secrets.md)")
    # Another process (another Secrets) reads the same key.
    assert open_secrets(url, env=UNSET).open(sealed, ROW_A) == PLAINTEXT


def test_processes_starting_together_make_one_key_file(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    sealed: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        secrets = open_secrets(url, env=UNSET)  # each its own source, as each process has
        barrier.wait()
        sealed.append(secrets.seal(PLAINTEXT, ROW_A))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(sealed) == 8 and len({key_id_of(s) for s in sealed}) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["portico-secrets.key"]  # no temporary left


def test_a_lost_key_file_is_reported_and_not_silently_replaced(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    sealed = open_secrets(url, env=UNSET).seal(PLAINTEXT, ROW_A)
    (tmp_path / "portico-secrets.key").unlink()

    with pytest.raises(UnknownSecretsKey, match="not configured"):
        open_secrets(url, env=UNSET).open(sealed, ROW_A)
    assert not (tmp_path / "portico-secrets.key").exists()


def test_a_configured_key_file_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    secrets = open_secrets(sqlite_url(tmp_path), str(path), env=UNSET)

    with pytest.raises(SecretsKeyMissing, match=f"{path}.*does not exist.*generate-key --file"):
        secrets.seal(PLAINTEXT, ROW_A)
    assert not path.exists()


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620, 0o666, 0o602])
def test_a_key_file_others_may_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secrets.key"
    write_key_file(path, [generate_key_text()], replace=False)
    path.chmod(mode)

    with pytest.raises(BadSecretsKey, match=f"mode 0{mode:o}.*chmod 600"):
        open_secrets(sqlite_url(tmp_path), str(path), env=UNSET).seal(PLAINTEXT, ROW_A)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440])
def test_a_key_file_of_its_owner_and_group_is_accepted(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secrets.key"
    write_key_file(path, [generate_key_text()], replace=False)
    path.chmod(mode)

    secrets = open_secrets(sqlite_url(tmp_path), str(path), env=UNSET)

    assert secrets.open(secrets.seal(PLAINTEXT, ROW_A), ROW_A) == PLAINTEXT


def test_a_bad_line_of_a_key_file_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    write_key_file(path, [generate_key_text(), "not-a-key"], replace=True)

    with pytest.raises(BadSecretsKey, match=f"{path}, line 5: not a secrets key") as refused:
        open_secrets(sqlite_url(tmp_path), str(path), env=UNSET).seal(PLAINTEXT, ROW_A)
    assert "not-a-key" not in str(refused.value)


def test_a_key_added_to_the_file_reaches_a_running_reader(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    old = generate_key_text()
    write_key_file(path, [old], replace=False)
    path.chmod(0o640)
    running = open_secrets(sqlite_url(tmp_path), str(path), env=UNSET)
    sealed_before = running.seal(PLAINTEXT, ROW_A)

    new = generate_key_text()
    keys = add_key(path, new)

    assert keys.ids == (parse_key(new).id, parse_key(old).id)
    assert key_id_of(running.seal(PLAINTEXT, ROW_A)) == parse_key(new).id
    assert running.open(sealed_before, ROW_A) == PLAINTEXT
    assert path.stat().st_mode & 0o777 == 0o640  # its mode kept
    assert path.read_text().startswith("# Portico's secrets key")  # and its comments


def test_postgresql_without_a_key_needs_one_given(tmp_path: Path) -> None:
    secrets = open_secrets("postgresql://portico@127.0.0.1:1/portico", env=UNSET)

    assert secrets.configured() is None
    with pytest.raises(
        SecretsKeyMissing, match=r"PORTICO_SECRETS_KEY or database.secrets_key_file"
    ):
        secrets.seal(PLAINTEXT, ROW_A)


def test_an_in_memory_database_has_a_key_for_its_life() -> None:
    secrets = open_secrets("sqlite://", env=UNSET)

    assert secrets.open(secrets.seal(PLAINTEXT, ROW_A), ROW_A) == PLAINTEXT
