"""``portico init``: a commented starter ``portico.yaml`` that ``portico check`` accepts."""

from __future__ import annotations

import os
from pathlib import Path

from portico.core.errors import PorticoError

__all__ = ["STARTER", "FileExists", "write_starter"]

STARTER = """\
# portico.yaml: the gateway's whole configuration. Every key is described in
# docs/configuration.md; `portico check` lists every error with its line, and `portico serve`
# applies edits to this file while it runs (an invalid edit is refused and logged).
#
# Durations take a unit (500ms, 30s, 5m, 1h); sizes too (512KiB, 10MiB).
# ${VAR} and ${VAR:-default} are replaced from the environment.

gateway:
  listen: 127.0.0.1:8080            # `portico serve --listen 0.0.0.0:8080` overrides it
  drain_timeout: 30s                # on SIGTERM, how long requests in flight may finish
  # access_log: true                # one JSON line per request

# Health (/healthz), readiness (/readyz) and Prometheus metrics (/metrics), on their own port.
operations:
  listen: 127.0.0.1:9180

# API keys made with `portico keys create`, OAuth signing keys, config revisions.
# SQLite by default; postgresql://user:password@host/dbname to share it between processes.
database:
  url: ${PORTICO_DATABASE_URL:-sqlite:///portico.db}

# The backends Portico forwards to.
services:
  example:
    targets: [http://127.0.0.1:9000]
    timeouts: {connect: 2s, read: 30s}
    # health_check:
    #   active: {path: /health, interval: 5s}

# Which requests go to which service: the most specific match wins.
routes:
  - name: example
    match: {path: "/example/{rest:path}"}
    service: example
    strip_prefix: /example          # GET /example/items -> GET /items
    # policies:
    #   - type: auth                # clients need a key: `portico keys create`
    #     methods: [api_key]
    #   - type: headers
    #     response:
    #       set: {X-Served-By: portico}

# Who may call: tenants and their consumers (applications), for the `auth` policy.
# tenants:
#   acme:
#     consumers:
#       billing:
#         scopes: [orders:read]
"""


class FileExists(PorticoError):
    """``portico init`` would replace a file."""


def write_starter(path: Path, *, force: bool = False) -> None:
    """Write :data:`STARTER` to ``path``; refuse to replace a file unless ``force``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        # O_EXCL: the check that the file is absent and its creation are one step.
        descriptor = os.open(path, flags, 0o644)
    except FileExistsError:
        raise FileExists(
            f"{path} exists and was left as it is; pass --force to replace it, or name "
            "another file: portico init FILE"
        ) from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(STARTER)
