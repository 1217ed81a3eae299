"""API key format: a visible id, a 256-bit secret, and only a SHA-256 of the key is kept."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from portico.identity.apikeys import generate_key, key_digest, key_id_of


def test_a_generated_key_has_a_visible_id_and_a_256_bit_secret() -> None:
    new = generate_key()

    prefix, key_id, secret = new.key.split("_", 2)
    assert prefix == "pk"
    assert key_id == new.id
    assert re.fullmatch(r"[a-z0-9]{10}", key_id)
    raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    assert len(raw) == 32


def test_the_stored_digest_is_the_sha256_of_the_whole_key() -> None:
    new = generate_key()

    assert new.sha256 == hashlib.sha256(new.key.encode()).hexdigest() == key_digest(new.key)


def test_the_key_does_not_appear_in_the_repr_of_a_new_key() -> None:
    new = generate_key()

    assert new.key not in repr(new)
    assert new.id in repr(new)


def test_generated_keys_and_ids_do_not_repeat() -> None:
    keys = [generate_key() for _ in range(2000)]

    assert len({k.key for k in keys}) == len(keys)
    assert len({k.id for k in keys}) == len(keys)


def test_the_id_is_read_from_a_well_formed_key() -> None:
    new = generate_key()

    assert key_id_of(new.key) == new.id


@pytest.mark.parametrize(
    "value",
    [
        "",
        "pk_",
        "pk__secret",
        "pk_abc",
        "pk_abc_",
        "sk_abc_secret",
        "pk_ab-c_secret",
        "pk_abc_" + "x" * 300,
        "Bearer pk_abc_secret",
    ],
)
def test_malformed_keys_have_no_id(value: str) -> None:
    assert key_id_of(value) is None
