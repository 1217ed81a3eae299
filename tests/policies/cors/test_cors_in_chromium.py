"""The ``cors`` policy as a real browser sees it: a page served from one origin calls the gateway
on another with ``fetch``, in Debian's headless Chromium, and reports what the browser let it
do. Skipped, saying so, when Chromium is not installed (``apt-get install chromium``); the rules
themselves are checked without a browser in ``test_cors_policy.py``."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from tests.support.gateway import RunningGateway, route, running_gateway
from tests.support.upstreams import Upstream

from portico.identity.apikeys import generate_key

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEY = generate_key()

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

PAGE = """<!doctype html>
<html><body><pre id="result">pending</pre>
<script>
const G = "%(gateway)s";
async function attempt(name, url, init, read) {
  try {
    const response = await fetch(G + url, init);
    return [name, await read(response)];
  } catch (error) {
    return [name, "blocked"];
  }
}
async function run() {
  const results = await Promise.all([
    attempt("put", "/app/orders", {
      method: "PUT", credentials: "include", body: "{}",
      headers: {"Content-Type": "application/json", "X-Trace": "1", "X-API-Key": "%(key)s"},
    }, async r => ({status: r.status, request_id: r.headers.get("x-request-id") !== null,
                    internal: r.headers.get("x-internal")})),
    attempt("unauthorized", "/app/orders", {
      method: "PUT", credentials: "include", body: "{}",
      headers: {"Content-Type": "application/json"},
    }, async r => ({status: r.status, type: (await r.json()).type})),
    attempt("header-not-allowed", "/app/orders", {
      method: "PUT", headers: {"X-Admin": "1", "X-API-Key": "%(key)s"},
    }, async r => r.status),
    attempt("other-site", "/elsewhere/orders", {
      method: "PUT", headers: {"Content-Type": "application/json"}, body: "{}",
    }, async r => r.status),
    attempt("simple-other-site", "/elsewhere/orders", {}, async r => r.status),
  ]);
  document.getElementById("result").textContent = JSON.stringify(Object.fromEntries(results));
}
run();
</script></body></html>
"""


class PageServer:
    """The page's origin: a plain HTTP server on another port than the gateway's."""

    def __init__(self) -> None:
        self.page = b""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(owner.page)))
                self.end_headers()
                self.wfile.write(owner.page)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("browser")
    yield server
    server.close()


@pytest.fixture(scope="module")
def site() -> Iterator[PageServer]:
    server = PageServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, site: PageServer
) -> Iterator[RunningGateway]:
    cors = {
        "type": "cors",
        "origins": [site.origin],
        "methods": ["GET", "PUT"],
        "headers": ["Content-Type", "X-Trace", "X-API-Key"],
        "credentials": True,
    }
    elsewhere = {"type": "cors", "origins": ["https://app.example.com"], "methods": ["PUT"]}
    config = {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "tenants": {
            "acme": {"consumers": {"shop": {"api_keys": [{"id": KEY.id, "sha256": KEY.sha256}]}}}
        },
        "routes": [
            route(
                "app",
                "/app/{rest:path}",
                methods=["GET", "PUT"],
                policies=[{"type": "auth", "methods": ["api_key"]}, cors],
            ),
            route("elsewhere", "/elsewhere/{rest:path}", policies=[elsewhere]),
        ],
    }
    with running_gateway(tmp_path_factory.mktemp("gateway"), config) as running:
        yield running


def browse(site: PageServer, gateway: RunningGateway, tmp_path: Path) -> dict[str, Any]:
    site.page = (PAGE % {"gateway": gateway.url, "key": KEY.key}).encode()
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-proxy-server",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            site.origin + "/",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found is not None, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    text = unescape(found.group(1))
    assert text != "pending", done.stderr[-2000:]
    result: dict[str, Any] = json.loads(text)
    return result


def test_chromium_obeys_the_policy(
    site: PageServer, gateway: RunningGateway, upstream: Upstream, tmp_path: Path
) -> None:
    before = upstream.count
    results = browse(site, gateway, tmp_path)

    # Allowed: the preflight passed, the PUT went through, and the script reads Portico's
    # request id (exposed by default) but not what is not exposed.
    assert results["put"] == {"status": 200, "request_id": True, "internal": None}
    # Portico's own 401 is readable by the page: it can tell the user why.
    assert results["unauthorized"] == {
        "status": 401,
        "type": "https://portico.dev/problems/unauthorized",
    }
    # Refused preflights: the browser never sends the request.
    assert results["header-not-allowed"] == "blocked"
    assert results["other-site"] == "blocked"
    # A simple GET is sent without asking, but its answer is kept from the script.
    assert results["simple-other-site"] == "blocked"
    sent = [(r.method, r.path) for r in upstream.received[before:]]
    assert sent.count(("PUT", "/app/orders")) == 1  # the allowed one only
    assert ("PUT", "/elsewhere/orders") not in sent
    assert ("GET", "/elsewhere/orders") in sent
    assert all(method != "OPTIONS" for method, _ in sent)  # preflights end at the gateway
