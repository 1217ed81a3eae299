"""``portico demo`` as a new user runs it: every curl line it prints works as printed, an edit of
the written config is picked up, and Ctrl-C (or SIGTERM) stops it cleanly with status 0."""

from __future__ import annotations

import json
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from portico.assembly import load_config
from portico.events.catalog import EventCatalog
from portico.events.publishing import Publisher
from portico.events.signing import Signer, webhook_headers
from portico.store.database import Database

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0
END_OF_TOUR = "Stop with Ctrl-C."


def portico_command() -> Path:
    script = ROOT / ".venv" / "bin" / "portico"
    return script if script.exists() else Path(sys.executable).with_name("portico")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Demo:
    process: subprocess.Popen[str]
    workdir: Path
    stderr_path: Path
    port: int
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    stdout: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def read_until(self, text: str, timeout: float) -> list[str]:
        """Stdout lines up to and including the first one containing ``text``."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {text!r} within {timeout}s; stderr:\n{self.stderr()}")
            if line is None:
                pytest.fail(f"the demo exited before printing {text!r}; stderr:\n{self.stderr()}")
            seen.append(line)
            if text in line:
                return seen

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def output(self) -> str:
        """Everything the demo wrote, once it has exited."""
        if self.reader is not None:
            self.reader.join(timeout=10)
        return "".join(self.stdout) + self.stderr()


def start_demo(tmp: Path, port: int | None = None, log: str = "stderr.log") -> Demo:
    port = free_port() if port is None else port
    workdir = tmp / "demo-work"
    stderr_path = tmp / log
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [str(portico_command()), "demo", "--workdir", str(workdir), "--port", str(port)],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    demo = Demo(process, workdir, stderr_path, port)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            demo.stdout.append(line)
            demo.lines.put(line.rstrip("\n"))
        demo.lines.put(None)

    demo.reader = threading.Thread(target=pump, daemon=True)
    demo.reader.start()
    return demo


def finish(demo: Demo) -> None:
    if demo.process.poll() is None:
        demo.process.kill()
        demo.process.wait(timeout=10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, list[str]]]:
    running = start_demo(tmp_path_factory.mktemp("demo"))
    try:
        running.read_until(f"Portico gateway on {running.url}", STARTUP_TIMEOUT)
        tour = running.read_until(END_OF_TOUR, STARTUP_TIMEOUT)
        yield running, tour
    finally:
        finish(running)


@dataclass(frozen=True)
class CurlResult:
    status: int
    content_type: str
    headers: dict[str, str]
    body: Any


def curl(command: str, cwd: Path | None = None) -> CurlResult:
    """Run a printed command line with the real curl; report the status on the side."""
    args = shlex.split(command)
    assert args[0] == "curl"
    args += ["--max-time", "10", "--write-out", "%{stderr}%{http_code} %{content_type}"]
    # Bytes, not text: universal newlines would turn the CRLFs that end the response head into LF.
    done = subprocess.run(args, capture_output=True, timeout=30, check=False, cwd=cwd)
    assert done.returncode == 0, f"{command}\nexit {done.returncode}: {done.stderr!r}"
    status, _, content_type = done.stderr.decode().strip().partition(" ")
    output = done.stdout.decode()
    headers: dict[str, str] = {}
    if "-i" in args:
        head, _, output = output.partition("\r\n\r\n")
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if content_type.startswith("text/plain"):
        return CurlResult(int(status), content_type, headers, output)  # /metrics
    try:
        body = json.loads(output)
    except ValueError:
        pytest.fail(f"{command}\nanswered {status} with a body that is not JSON:\n{output}")
    return CurlResult(int(status), content_type, headers, body)


def curl_lines(tour: list[str]) -> list[tuple[str, str]]:
    """Each printed curl line with the comment above it."""
    found = []
    comment = ""
    for line in tour:
        text = line.strip()
        if text.startswith("#"):
            comment = text
        elif text.startswith("curl "):
            found.append((comment, text))
    return found


def check_answer(comment: str, command: str, result: CurlResult) -> None:
    where = f"{command}\n-> {result.status} {result.content_type}: {str(result.body)[:2000]}"
    if command.endswith("/readyz"):
        assert result.status == 200, where
        assert result.body == {"status": "ready", "checks": {"store": "ok"}}, where
        return
    if command.endswith("/metrics"):
        assert result.status == 200, where
        assert result.content_type.startswith("text/plain"), where
        # The tour's requests so far are counted, by route and status class.
        lines = result.body.splitlines()
        assert any(
            line.startswith("portico_requests_total{") and 'route="orders-v1"' in line
            for line in lines
        ), where
        assert any(
            line.startswith("portico_request_duration_seconds_bucket{")
            and 'route="order-v2"' in line
            for line in lines
        ), where
        return
    if command.endswith("/received"):
        # The webhook receiver: what it got, verified or refused, newest first.
        assert result.status == 200, where
        assert isinstance(result.body["items"], list), where
        return
    if "/admin/v1/" in command:
        # The admin API, with the admin token the demo printed: the config's consumers.
        assert result.status == 200, where
        assert "demo/shop" in {c["id"] for c in result.body["items"]}, where
        return
    if "problem+json" in comment:
        assert result.status == 404, where
        assert result.content_type == "application/problem+json", where
        assert result.body["type"].startswith("https://"), where
        assert result.body["request_id"], where
        return
    assert 200 <= result.status < 300, where
    assert result.content_type == "application/json", where
    debug = result.body["debug"]
    assert debug["x_forwarded_for"] == "127.0.0.1", where
    assert debug["request_id"], where
    if "X-Request-ID: my-trace-42" in command:
        assert debug["request_id"] == "my-trace-42", where
        assert result.headers["x-request-id"] == "my-trace-42", where
    if "-X POST" in command:
        assert result.status == 201, where
        # The backend says /orders/<id>; the gateway maps it back to the route's /v1 prefix.
        assert result.headers["location"] == f"/v1/orders/{result.body['id']}", where
    path = next(urlsplit(arg).path for arg in shlex.split(command) if arg.startswith("http"))
    if path.startswith("/partner/") and "--cert" in command:
        # demo/ledger's certificate, over the HTTPS listener.
        assert debug["served_by"] == "orders-v2", where
        assert debug["portico_headers"]["X-Portico-Consumer"] == "demo/ledger", where
        assert debug["portico_headers"]["X-Portico-Auth-Method"] == "mtls", where
    elif path.startswith("/partner/"):
        # The key printed by the demo identifies consumer demo/shop to the backend.
        assert debug["served_by"] == "orders-v2", where
        assert debug["portico_headers"] == {
            "X-Portico-Auth-Method": "api_key",
            "X-Portico-Consumer": "demo/shop",
            "X-Portico-Scopes": "orders:read",
            "X-Portico-Tenant": "demo",
        }, where
    elif "/v2/" in path or "X-Api-Version: 2" in command:
        assert debug["served_by"] == "orders-v2", where
        if "data" not in result.body:
            assert set(result.body["total"]) == {"amount", "currency"}, where
    elif "/orders" in path:
        assert debug["served_by"] == "orders-v1", where
        if "orders" not in result.body:
            assert isinstance(result.body["total"], float), where
    elif "/crm/" in path:
        assert debug["served_by"] in {"crm-1", "crm-2"}, where
        assert debug["path"].startswith("/customers"), where


def test_every_printed_curl_line_works_as_printed(demo: tuple[Demo, list[str]]) -> None:
    running, tour = demo
    lines = curl_lines(tour)
    assert len(lines) >= 8, "\n".join(tour)
    [operations] = [line.split()[1] for line in tour if line.strip().startswith("operations ")]
    [https] = [line.split()[1] for line in tour if line.strip().startswith("https ")]
    [admin] = [line.split()[2] for line in tour if line.strip().startswith("admin API ")]
    for comment, command in lines:
        urls = (running.url, operations, https, admin, receiver_url(tour))
        assert any(url in command for url in urls), command
        # The certificate paths are relative to the directory the demo was started in.
        check_answer(comment, command, curl(command, cwd=running.workdir.parent))


def test_the_demo_says_what_it_is_doing_before_each_step_that_takes_time(
    demo: tuple[Demo, list[str]],
) -> None:
    """A first start is seconds of imports (Python compiling every module without bytecode),
    then backends, keys, the database: each step is announced before it starts, in order."""
    running, _ = demo
    said = [line for line in running.stdout if not line.startswith(" ")]
    beginnings = [
        "portico demo: loading Portico and its libraries",
        "portico demo: starting the sample backends",
        "Wrote the sample config to ",
        f"portico demo: starting the gateway on 127.0.0.1:{running.port} ",
        f"Portico gateway on {running.url}",
    ]

    assert len(said) >= len(beginnings), said
    for line, beginning in zip(said, beginnings, strict=False):
        assert line.startswith(beginning), said


def test_crm_requests_take_turns_between_the_two_instances(demo: tuple[Demo, list[str]]) -> None:
    _, tour = demo
    [command] = [c for _, c in curl_lines(tour) if "email=" in c]
    served_by = {curl(command).body["debug"]["served_by"] for _ in range(2)}
    assert served_by == {"crm-1", "crm-2"}


def test_the_printed_check_command_accepts_the_written_config(
    demo: tuple[Demo, list[str]],
) -> None:
    running, tour = demo
    [line] = [line for line in tour if " check " in line]
    command = shlex.split(line.partition(": ")[2])
    done = subprocess.run(
        command, cwd=running.workdir.parent, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "15 routes" in done.stdout


def test_an_edit_of_the_written_config_is_reloaded(demo: tuple[Demo, list[str]]) -> None:
    running, _ = demo
    config = running.workdir / "portico.yaml"
    text = config.read_text(encoding="utf-8")
    assert "X-Demo: hello from portico.yaml" in text
    config.write_text(text.replace("hello from portico.yaml", "edited by the test"))
    command = f"curl -s -i {running.url}/v1/orders/1001"
    deadline = time.monotonic() + 20
    while (value := curl(command).headers.get("x-demo")) != "edited by the test":
        assert time.monotonic() < deadline, f"X-Demo is still {value!r}"
        time.sleep(0.2)


def receiver_url(tour: list[str]) -> str:
    [line] = [c for _, c in curl_lines(tour) if c.endswith("/received")]
    return line.split()[-1].removesuffix("/received")


def received(url: str) -> list[dict[str, Any]]:
    with httpx.Client() as client:
        items: list[dict[str, Any]] = client.get(f"{url}/received").json()["items"]
    return items


def test_a_published_event_reaches_the_sample_receiver_signed_and_verified(
    demo: tuple[Demo, list[str]],
) -> None:
    """Published into the demo's store as another process would; the demo's dispatcher delivers
    it to demo/shop's endpoint; the receiver verifies it, and so does the standardwebhooks
    library with the secret the demo made."""
    running, tour = demo
    url = receiver_url(tour)
    config = load_config(running.workdir / "portico.yaml")
    data = {"id": "1002", "customer_id": "c-101", "carrier": "DHL", "tracking_number": "JD0002"}
    with Database(config.database.url) as database:
        publisher = Publisher(database, lambda: EventCatalog(config.events))
        published = publisher.publish("order.shipped", data, publisher="test", tenant="demo")
    assert published.deliveries == 1

    deadline = time.monotonic() + 30
    while not (got := [m for m in received(url) if m["headers"]["webhook-id"] == published.id]):
        assert time.monotonic() < deadline, received(url)
        time.sleep(0.1)
    [message] = got
    assert message["verified"] is True, message
    assert message["type"] == "order.shipped"
    assert message["path"] == "/webhooks/shop"

    secret = (running.workdir / "keys" / "webhook-secret.txt").read_text().strip()
    assert secret.startswith("whsec_")
    assert secret not in running.stderr()
    payload = Webhook(secret).verify(message["body"], message["headers"])
    assert payload == {"type": "order.shipped", "timestamp": payload["timestamp"], "data": data}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(message["body"].replace("DHL", "UPS"), message["headers"])


def test_an_order_placed_through_the_gateway_arrives_as_order_created_at_the_receiver(
    demo: tuple[Demo, list[str]],
) -> None:
    """The demo's route orders-v1-create publishes order.created with the order orders-v1
    created (the publish policy), and demo/shop's endpoint gets it, signed."""
    running, tour = demo
    url = receiver_url(tour)
    new_order = {"customer_id": "c-100", "items": [{"sku": "PC-CARDS", "quantity": 4}]}
    with httpx.Client() as client:
        created = client.post(f"{running.url}/v1/orders", json=new_order)
        # A GET of the same path is another route, which publishes nothing.
        assert client.get(f"{running.url}/v1/orders").status_code == 200
    assert created.status_code == 201, created.text
    order = created.json()

    def arrived() -> list[dict[str, Any]]:
        return [
            m
            for m in received(url)
            if m["type"] == "order.created" and json.loads(m["body"])["data"]["id"] == order["id"]
        ]

    deadline = time.monotonic() + 30
    while not (got := arrived()):
        assert time.monotonic() < deadline, received(url)
        time.sleep(0.1)
    [message] = got
    assert message["verified"] is True, message
    secret = (running.workdir / "keys" / "webhook-secret.txt").read_text().strip()
    payload = Webhook(secret).verify(message["body"], message["headers"])
    assert payload["data"] == order
    assert payload["data"]["items"][0]["quantity"] == 4


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="unsigned"),
        pytest.param({"webhook-signature": "v1,AAAA"}, id="wrong-signature"),
        pytest.param({"webhook-timestamp": "1"}, id="old-timestamp"),
        pytest.param({"webhook-signature": "v1a,AAAA"}, id="other-scheme"),
    ],
)
def test_the_sample_receiver_refuses_what_portico_did_not_sign(
    demo: tuple[Demo, list[str]], headers: dict[str, str]
) -> None:
    running, tour = demo
    url = receiver_url(tour)
    secret = (running.workdir / "keys" / "webhook-secret.txt").read_text().strip()
    body = b'{"type":"order.created","timestamp":"2026-03-05T10:00:00Z","data":{}}'
    now = int(time.time())
    signed = dict(
        webhook_headers(f"msg_forged{len(headers)}", now, body, [Signer.from_secret(secret)])
    )
    forged = {**signed, **headers} if headers else {}
    with httpx.Client() as client:
        answer = client.post(f"{url}/webhooks/shop", content=body, headers=forged)
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    [latest, *_] = received(url)
    assert latest["verified"] is False and latest["rejected"], latest


def test_the_sample_receiver_refuses_a_repeated_signature_field(
    demo: tuple[Demo, list[str]],
) -> None:
    """Two webhook-signature fields, one of them valid: which one a sender meant is not the
    receiver's to pick."""
    running, tour = demo
    url = receiver_url(tour)
    secret = (running.workdir / "keys" / "webhook-secret.txt").read_text().strip()
    body = b'{"type":"order.created","timestamp":"2026-03-05T10:00:00Z","data":{}}'
    signed = webhook_headers("msg_twice", int(time.time()), body, [Signer.from_secret(secret)])
    pairs = [*signed, ("webhook-signature", "v1,AAAA")]
    with httpx.Client() as client:
        answer = client.post(f"{url}/webhooks/shop", content=body, headers=pairs)
    assert answer.status_code == 401, answer.text
    assert received(url)[0]["rejected"] == "duplicate-headers"


def test_ctrl_c_stops_the_demo_cleanly(demo: tuple[Demo, list[str]]) -> None:
    running, _ = demo
    assert running.stop(signal.SIGINT) == 0
    output = running.output()
    assert "Traceback" not in output, output


def test_sigterm_stops_the_demo_cleanly(tmp_path: Path) -> None:
    running = start_demo(tmp_path)
    try:
        running.read_until(END_OF_TOUR, STARTUP_TIMEOUT)
        assert running.stop(signal.SIGTERM) == 0
    finally:
        finish(running)
    output = running.output()
    assert "Traceback" not in output, output


def run_until_tour(tmp: Path, port: int | None, log: str) -> tuple[Demo, list[str]]:
    running = start_demo(tmp, port, log)
    try:
        return running, running.read_until(END_OF_TOUR, STARTUP_TIMEOUT)
    except BaseException:
        finish(running)
        raise


def key_lines(tour: list[str]) -> list[str]:
    return [line.strip() for line in tour if "X-API-Key:" in line]


def test_a_second_run_keeps_the_edited_config_and_prints_the_key_it_declares(
    tmp_path: Path,
) -> None:
    first, tour = run_until_tour(tmp_path, None, "first.log")
    try:
        [key_line] = key_lines(tour)
        assert first.stop(signal.SIGINT) == 0
    finally:
        finish(first)
    config = first.workdir / "portico.yaml"
    config.write_text(config.read_text().replace("hello from portico.yaml", "my own edit"))

    # The port given now is not the config's: the config wins, and the demo says so.
    second, tour = run_until_tour(tmp_path, free_port(), "second.log")
    try:
        printed = "\n".join(tour)
        assert "from an earlier run, with your edits" in printed, printed
        assert "portico demo: starting the sample backends" in printed, printed
        assert f"listens on :{first.port}" in printed, printed
        assert "my own edit" in config.read_text()
        assert key_lines(tour) == [key_line]
        assert curl(key_line).status == 200
        answer = curl(f"curl -s -i http://127.0.0.1:{first.port}/v1/orders/1001")
        assert answer.headers["x-demo"] == "my own edit"
        assert second.stop(signal.SIGINT) == 0
    finally:
        finish(second)

    # A config that no longer declares the demo's key: no key is printed, only how to make one.
    text = config.read_text()
    config.write_text("\n".join(line for line in text.splitlines() if "api_keys:" not in line))
    third, tour = run_until_tour(tmp_path, first.port, "third.log")
    try:
        assert key_lines(tour) == []
        assert any("keys create --consumer demo/shop" in line for line in tour), tour
        assert third.stop(signal.SIGINT) == 0
    finally:
        finish(third)


def test_a_broken_kept_config_is_reported_in_a_few_lines_with_what_to_do(tmp_path: Path) -> None:
    workdir = tmp_path / "demo-work"
    workdir.mkdir()
    (workdir / "portico.yaml").write_text("gateway:\n  listen: nowhere\n")
    done = subprocess.run(
        [str(portico_command()), "demo", "--workdir", str(workdir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert "gateway.listen" in done.stderr, done.stderr
    assert "delete it to start from the sample config" in done.stderr, done.stderr
    # The user's file is left as it was.
    assert (workdir / "portico.yaml").read_text() == "gateway:\n  listen: nowhere\n"


def test_the_example_config_is_the_one_the_demo_ships() -> None:
    shipped = ROOT / "src" / "portico" / "demo" / "portico.yaml"
    example = ROOT / "examples" / "demo" / "portico.yaml"
    assert example.read_text(encoding="utf-8") == shipped.read_text(encoding="utf-8")
