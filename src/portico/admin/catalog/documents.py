"""A service's OpenAPI document as the catalog reads it: loaded and checked as ``portico
check`` loads it (:func:`portico.policies.validation.document.load_document`), and kept while
its file is unchanged, so that a list of the catalog does not read every document again."""

from __future__ import annotations

import os
import threading

from portico.policies.validation.document import DocumentError, OpenAPIDocument, load_document

__all__ = ["DocumentError", "service_document"]

_KEPT = 64
_lock = threading.Lock()
_documents: dict[str, tuple[tuple[int, int], OpenAPIDocument | DocumentError]] = {}


def service_document(path: str) -> OpenAPIDocument:
    """The document at ``path``; raises :class:`DocumentError` when it cannot be used."""
    try:
        stat = os.stat(path)
        stamp = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = (-1, -1)
    with _lock:
        kept = _documents.get(path)
    if kept is None or kept[0] != stamp:
        try:
            found: OpenAPIDocument | DocumentError = load_document(path)
        except DocumentError as exc:
            found = exc
        with _lock:
            if len(_documents) >= _KEPT:
                _documents.pop(next(iter(_documents)))
            _documents[path] = (stamp, found)
        kept = (stamp, found)
    if isinstance(kept[1], DocumentError):
        raise kept[1]
    return kept[1]
