"""Where the master keys come from: ``PORTICO_SECRETS_KEY``, a key file, or a file Portico makes.

:func:`key_source` decides, from the database URL, ``database.secrets_key_file`` and the
environment:

- ``PORTICO_SECRETS_KEY`` set: its keys (newest first, separated by commas or spaces). Every
  process started from the same environment has them, ``--workers`` processes included.
- ``database.secrets_key_file``: the keys of that file, which must exist. Setting both is refused:
  which one wins would be a surprise to whoever set the other.
- neither, with a SQLite file: a key file beside the database (``portico.db`` ->
  ``portico-secrets.key``), made the first time a secret is sealed, readable by its owner only.
  A newcomer's ``portico serve`` and ``make demo`` work without a step; every process of one
  machine reads the same file (it is created at most once, atomically, however many start).
- neither, with PostgreSQL: no key. Processes may run on several machines, which a file made on
  one of them would not reach, so the operator gives the key; a secret to seal or open then fails
  with :class:`SecretsKeyMissing`, saying so. A store without secrets needs no key.

A key file is read again when it changes (its size, time or inode): a key added to it reaches
running processes without a restart, which is what rotating without downtime needs. Keys in the
environment are fixed for the life of a process.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from portico.core.secret_keys import KeyFileProblem, read_key_file
from portico.store.database import normalise_url
from portico.store.secrets.errors import BadSecretsKey, SecretsKeyMissing
from portico.store.secrets.keys import MasterKey, MasterKeys, generate_key_text, parse_key

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "EnvironmentKeys",
    "FixedKeys",
    "KeyFile",
    "KeySource",
    "NoKeys",
    "add_key",
    "default_key_file",
    "key_source",
    "write_key_file",
]

log = logging.getLogger("portico.store.secrets")

ENVIRONMENT_VARIABLE = "PORTICO_SECRETS_KEY"
_SEPARATORS = re.compile(r"[\s,]+")
FILE_HEADER = """\
# Portico's secrets key (docs/secrets.md): it encrypts the secrets Portico stores in its
# database. Keep it apart from the database's backups, and do not lose it: without it they
# cannot be read. One key a line, newest first: the first seals new secrets, every one opens.
"""
_HINT = "`portico secrets generate-key` prints a new key; docs/secrets.md"


class KeySource(Protocol):
    """The master keys of one configuration."""

    @property
    def origin(self) -> str:
        """Where the keys come from, for messages."""
        ...

    def keys(self, *, create: bool) -> MasterKeys:
        """The keys now; ``create``: make them when this source may (a secret is being sealed).
        Raises :class:`SecretsKeyMissing` when there are none."""
        ...

    def configured(self) -> MasterKeys | None:
        """The keys now, or ``None`` when there are none; never creates anything."""
        ...


class EnvironmentKeys:
    """The keys of ``PORTICO_SECRETS_KEY``, read once."""

    def __init__(self, text: str, variable: str = ENVIRONMENT_VARIABLE) -> None:
        parts = [part for part in _SEPARATORS.split(text) if part]
        keys: list[MasterKey] = []
        for number, part in enumerate(parts, start=1):
            try:
                keys.append(parse_key(part))
            except ValueError as exc:
                raise BadSecretsKey(f"{variable}, key {number}: {exc}") from None
        if not keys:
            raise BadSecretsKey(f"{variable} is set but holds no key ({_HINT})")
        self.origin = variable
        self._keys = MasterKeys.of(keys, variable)

    def keys(self, *, create: bool) -> MasterKeys:
        return self._keys

    def configured(self) -> MasterKeys | None:
        return self._keys


class FixedKeys:
    """Keys given in code: an in-memory SQLite database's, which lives as long as its process."""

    def __init__(self, keys: MasterKeys) -> None:
        self.origin = keys.origin
        self._keys = keys

    def keys(self, *, create: bool) -> MasterKeys:
        return self._keys

    def configured(self) -> MasterKeys | None:
        return self._keys


class NoKeys:
    """No key configured, where Portico must not make one; ``reason`` says what to do."""

    origin = "neither PORTICO_SECRETS_KEY nor database.secrets_key_file is set"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def keys(self, *, create: bool) -> MasterKeys:
        raise SecretsKeyMissing(self.reason)

    def configured(self) -> MasterKeys | None:
        return None


class KeyFile:
    """The keys of a file, read again whenever it changes.

    ``generated``: Portico's own file beside a SQLite database, made when first needed.
    """

    def __init__(self, path: Path, *, generated: bool = False) -> None:
        self.path = path
        self.generated = generated
        made = " that Portico makes beside the database" if generated else ""
        self.origin = f"the key file {path}{made}"
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._keys: MasterKeys | None = None

    def keys(self, *, create: bool) -> MasterKeys:
        with self._lock:
            keys = self._read()
            if keys is not None:
                return keys
            if create and self.generated:
                if write_key_file(self.path, [generate_key_text()], replace=False):
                    log.warning(
                        "made the secrets key file %s: it encrypts the secrets Portico stores "
                        "in the database; keep a copy of it apart from the database's backups "
                        "(docs/secrets.md)",
                        self.path,
                    )
                keys = self._read()
                if keys is not None:
                    return keys
            raise SecretsKeyMissing(self._missing())

    def configured(self) -> MasterKeys | None:
        with self._lock:
            return self._read()

    def _missing(self) -> str:
        if self.generated:
            return (
                f"the secrets key file {self.path}, which Portico made beside the database, does "
                "not exist: restore it from where you keep it, or set PORTICO_SECRETS_KEY or "
                "database.secrets_key_file to the key that sealed the stored secrets"
            )
        return (
            f"the secrets key file {self.path} (database.secrets_key_file) does not exist: "
            f"create it with `portico secrets generate-key --file {self.path}`, or correct "
            "the path"
        )

    def _read(self) -> MasterKeys | None:
        try:
            status, keys = read_key_file(self.path)
        except FileNotFoundError:
            self._stamp = self._keys = None
            return None
        except KeyFileProblem as exc:
            raise BadSecretsKey(str(exc)) from None
        # The status read before the text: a change made meanwhile is read again next time.
        stamp = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_mode)
        if stamp != self._stamp or self._keys is None:
            self._keys = MasterKeys.of(
                (MasterKey.from_bytes(key) for key in keys), f"the key file {self.path}"
            )
            self._stamp = stamp
        return self._keys


def write_key_file(path: Path, keys: list[str], *, replace: bool) -> bool:
    """Write a key file of ``keys`` (newest first) at ``path``, readable by its owner only.

    ``replace=False`` creates the file only if it does not exist: when several processes start
    at once, the first one's key is everyone's. Returns whether this call wrote it.
    """
    text = FILE_HEADER + "".join(f"{key}\n" for key in keys)
    return _write_atomically(path, text, replace=replace)


def add_key(path: Path, key: str) -> MasterKeys:
    """Put ``key`` first in the key file at ``path``, keeping the keys and comments already
    there (and the file's mode and owner); make the file if there is none. Processes reading
    the file seal with ``key`` from their next use of it, and still open with the others."""
    while True:
        try:
            before = os.stat(path)
        except FileNotFoundError:
            if write_key_file(path, [key], replace=False):
                break
            continue  # made meanwhile by a starting process: add to it
        # Refuses a file it would not read (loose mode, not keys) rather than rewrite it.
        KeyFile(path).keys(create=False)
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        first = next(
            (
                i
                for i, line in enumerate(lines)
                if line.strip() and not line.lstrip().startswith("#")
            ),
            len(lines),
        )
        lines.insert(first, f"{key}\n")
        _write_atomically(path, "".join(lines), replace=True, like=before)
        break
    return KeyFile(path).keys(create=False)


def _write_atomically(
    path: Path, text: str, *, replace: bool, like: os.stat_result | None = None
) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file 0600 before a byte is written; link() and replace() then put it in
    # place whole, so no reader ever sees half a key file.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            if like is not None:
                # The file replaced was readable by the processes that use it: so is this one.
                os.fchmod(file.fileno(), stat.S_IMODE(like.st_mode))
                if os.geteuid() == 0:
                    os.fchown(file.fileno(), like.st_uid, like.st_gid)
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def default_key_file(url: str) -> Path | None:
    """The key file Portico makes beside a SQLite database file; ``None`` for other databases."""
    parsed = normalise_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database:
        return None
    if database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    # Not portico.db.key: `cp portico.db*` (a backup by hand) must not take the key along.
    return path.with_name(f"{path.stem}-secrets.key")


def key_source(url: str, key_file: str | None, env: Mapping[str, str]) -> KeySource:
    """The master keys for the database at ``url`` (see the module's docstring)."""
    text = env.get(ENVIRONMENT_VARIABLE, "")
    if text.strip():
        if key_file is not None:
            raise BadSecretsKey(
                f"both {ENVIRONMENT_VARIABLE} and database.secrets_key_file ({key_file}) are "
                "set: give the secrets key in one place only"
            )
        return EnvironmentKeys(text)
    if key_file is not None:
        return KeyFile(Path(key_file))
    beside = default_key_file(url)
    if beside is not None:
        return KeyFile(beside, generated=True)
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        # The database lives as long as the process: so may its key.
        return FixedKeys(MasterKeys.of([parse_key(generate_key_text())], "an in-memory key"))
    return NoKeys(
        "no secrets key is configured, and for this database Portico does not make one (its "
        "processes may run on several machines): set PORTICO_SECRETS_KEY or "
        f"database.secrets_key_file ({_HINT})"
    )
