"""The text of a secrets key and of a key file, as ``portico check`` and the store both read them.

No cryptography here: ``portico check`` reads ``database.secrets_key_file`` with these rules
without importing the store or ``cryptography``; the store
(:mod:`portico.store.secrets.sources`) reads it with the same ones and makes master keys of the
bytes.

A key is 32 random bytes in base64, either alphabet (standard, as ``openssl rand -base64 32``
writes it, or URL-safe), with or without its padding. A key file holds one a line, newest first;
blank lines and ``#`` comments are skipped. Others may not read it, nor anyone but its owner
write it (a key written in by someone else would seal new secrets for them); its group may read
it (a service group, or Kubernetes' ``fsGroup``, is a common way to hand a file to a process).
"""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

__all__ = ["KEY_BYTES", "LOOSE_MODE", "KeyFileProblem", "decode_key", "read_key_file"]

KEY_BYTES = 32
"""256 bits: AES-256, and no key to guess."""
LOOSE_MODE = stat.S_IWGRP | stat.S_IRWXO
"""The mode bits a key file may not have."""
# 32 bytes are 43 base64 digits and one "=" of padding.
_BASE64_KEY = re.compile(r"[A-Za-z0-9+/_-]{43}=?")
_HINT = "`portico secrets generate-key` prints a new key; docs/secrets.md"


class KeyFileProblem(ValueError):
    """A key file that cannot be used; the message names it and says what to do."""


def decode_key(text: str) -> bytes:
    """The 32 bytes of a key's text; ``ValueError`` saying why not (never repeating the text)."""
    cleaned = text.strip()
    if not _BASE64_KEY.fullmatch(cleaned):
        raise ValueError(
            f"not a secrets key: expected {KEY_BYTES} random bytes in base64 (44 characters; "
            "`portico secrets generate-key` prints one)"
        )
    return base64.urlsafe_b64decode(cleaned.replace("+", "-").replace("/", "_").rstrip("=") + "=")


def read_key_file(path: Path) -> tuple[os.stat_result, list[bytes]]:
    """The file's status and its keys (newest first).

    ``FileNotFoundError`` when it does not exist; :class:`KeyFileProblem` when it cannot be used.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeyFileProblem(f"cannot use the secrets key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(status.st_mode):
        raise KeyFileProblem(f"the secrets key file {path} is not a file")
    if status.st_mode & LOOSE_MODE:
        raise KeyFileProblem(
            f"the secrets key file {path} may be read or written by other users (mode "
            f"{stat.S_IMODE(status.st_mode):04o}): let only its owner use it, chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise KeyFileProblem(f"cannot read the secrets key file {path}: {why}") from None
    keys: list[bytes] = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.strip()
        if not content or content.startswith("#"):
            continue
        try:
            keys.append(decode_key(content))
        except ValueError as exc:
            raise KeyFileProblem(f"the secrets key file {path}, line {number}: {exc}") from None
    if not keys:
        raise KeyFileProblem(f"the secrets key file {path} holds no key ({_HINT})")
    return status, keys
