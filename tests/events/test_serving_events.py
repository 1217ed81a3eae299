"""The events capability in real processes: ``portico serve`` syncs the file's endpoints and
delivers, ``portico serve --role worker`` delivers when the gateway does not, and both report
the webhook metrics."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook
from tests.events.harness import TENANTS, TYPES
from tests.support.gateway import (
    PorticoProcess,
    _portico_command,
    proxy_config,
    run_portico,
    wait_for,
    write_config,
)
from tests.support.receivers import Receiver

from portico.config.model import PorticoConfig
from portico.events.service import Events
from portico.events.signing import generate_secret
from portico.store.database import Database
from portico.store.secrets import current_store_secrets

SECRET = generate_secret()
ORDER = {"order_id": "o1", "total": 3}


def events_config(tmp_path: Path, receiver: Receiver, **delivery: Any) -> dict[str, Any]:
    config = proxy_config("http://127.0.0.1:9")
    config["database"] = {"url": f"sqlite:///{tmp_path / 'portico.db'}"}
    config["tenants"] = TENANTS
    config["events"] = {
        "types": TYPES,
        "endpoints": {
            "orders": {
                "consumer": "acme/billing",
                "url": receiver.url("/orders"),
                "types": ["order.*"],
                "secret": SECRET,
            }
        },
        "delivery": {
            "allow_http": True,
            "allow_networks": ["127.0.0.0/8"],
            "schedule": [0, 0.1],
            "claim_timeout": 20,
            **delivery,
        },
    }
    return config


def publish_into(config_path: Path, event_type: str, data: Any) -> str:
    """Publish as another process would, into the store the running processes use."""
    config = PorticoConfig.model_validate(__import__("yaml").safe_load(config_path.read_text()))
    database = Database(config.database.url)
    try:
        events = Events(database, current_store_secrets(config.database.url), lambda: config)
        return events.publisher.publish(event_type, data, publisher="admin:test").id
    finally:
        database.dispose()


def test_serve_syncs_the_files_endpoints_and_delivers(tmp_path: Path, receiver: Receiver) -> None:
    process = PorticoProcess(tmp_path, events_config(tmp_path, receiver))
    try:
        event_id = wait_for(
            lambda: _published(process.config_path, "order.shipped", {"n": 1}), timeout=60
        )
        receiver.wait_for(1, "/orders")
        (item,) = receiver.at("/orders")
        assert item.id == event_id
        assert Webhook(SECRET).verify(item.body, item.headers)["data"] == {"n": 1}
        metrics = wait_for(
            lambda: _metrics_with(process.operations_url, "portico_webhook_deliveries_total"),
            timeout=60,
        )
        assert 'portico_webhook_deliveries_total{outcome="succeeded"} 1.0' in metrics
        assert "portico_webhook_queue_depth" in metrics
    finally:
        process.stop()


def test_a_worker_role_process_delivers_what_serve_leaves_to_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = events_config(tmp_path, receiver, enabled=False)
    process = PorticoProcess(tmp_path, config)
    worker: subprocess.Popen[str] | None = None
    try:
        event_id = wait_for(
            lambda: _published(
                process.config_path, "order.created", {"order_id": "o1", "total": 3}
            ),
            timeout=60,
        )
        assert receiver.at("/orders") == []  # serve does not deliver: enabled is off
        worker = subprocess.Popen(
            [_portico_command(), "serve", "--role", "worker", "-c", str(process.config_path)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        receiver.wait_for(1, "/orders")
        assert receiver.at("/orders")[0].id == event_id
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        process.stop()


def test_a_worker_without_an_events_section_says_so_in_one_line(tmp_path: Path) -> None:
    write_config(tmp_path / "portico.yaml", proxy_config("http://127.0.0.1:9"))
    done = run_portico("serve", "--role", "worker", "-c", "portico.yaml", cwd=tmp_path)
    assert done.returncode != 0
    assert "has no events section" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _published(config_path: Path, event_type: str, data: Any) -> str | None:
    # The file's endpoint reaches the store shortly after the process starts.
    with Database(_url(config_path)) as database:
        import sqlalchemy as sa

        with database.read() as session:
            if not session.execute(sa.text("SELECT 1 FROM webhook_endpoints")).first():
                return None
    return publish_into(config_path, event_type, data)


def _url(config_path: Path) -> str:
    import yaml

    return str(yaml.safe_load(config_path.read_text())["database"]["url"])


def _metrics_with(url: str, name: str) -> str | None:
    text = httpx.get(f"{url}/metrics").text
    return text if f'{name}{{outcome="succeeded"}} 0.0' not in text and name in text else None


def test_with_workers_the_delivery_counters_are_summed_and_the_queue_read_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    process = PorticoProcess(tmp_path, events_config(tmp_path, receiver), ("--workers", "2"))
    try:
        for n in range(3):
            wait_for(lambda n=n: _published(process.config_path, "order.shipped", {"n": n}), 60)
        receiver.wait_for(3, "/orders")
        metrics = wait_for(
            lambda: _metrics_with(process.operations_url, "portico_webhook_deliveries_total"),
            timeout=60,
        )
        summed = wait_for(
            lambda: (
                text
                if 'portico_webhook_deliveries_total{outcome="succeeded"} 3.0'
                in (text := httpx.get(f"{process.operations_url}/metrics").text)
                else None
            ),
            timeout=60,
        )
        assert metrics.count("# TYPE portico_webhook_queue_depth gauge") == 1
        # The publish-to-first-attempt histogram is summed too: one family, three attempts.
        assert summed.count("# TYPE portico_webhook_first_attempt_seconds histogram") == 1
        assert "portico_webhook_first_attempt_seconds_count 3.0" in summed
        assert 'portico_webhook_first_attempt_seconds_bucket{le="+Inf"} 3.0' in summed
    finally:
        process.stop()


def test_a_reload_that_adds_the_events_section_serves_it_and_one_that_removes_it_stops(
    tmp_path: Path, receiver: Receiver
) -> None:
    with_events = events_config(tmp_path, receiver, poll_interval=0.1)
    without = {name: value for name, value in with_events.items() if name != "events"}
    process = PorticoProcess(tmp_path, without)
    try:
        with process.client() as client:
            # No consumer API: the path is the catch-all route's (its upstream is down).
            assert client.get("/webhooks/v1/event-types").status_code == 502
        process.write(with_events)
        process.signal(signal.SIGHUP)
        wait_for(lambda: "events section added" in process.log(), timeout=30)
        with process.client() as client:
            # The consumer API is served now: it asks who is calling.
            assert client.get("/webhooks/v1/event-types").status_code == 401
        event_id = wait_for(
            lambda: _published(process.config_path, "order.shipped", {"n": 7}), timeout=60
        )
        receiver.wait_for(1, "/orders")
        assert [item.id for item in receiver.at("/orders")] == [event_id]
        metrics = httpx.get(f"{process.operations_url}/metrics").text
        assert "portico_webhook_queue_depth" in metrics

        process.write(without)
        process.signal(signal.SIGHUP)
        wait_for(lambda: "events section removed" in process.log(), timeout=30)
        with process.client() as client:
            assert client.get("/webhooks/v1/event-types").status_code == 502
        assert "portico_webhook_queue_depth" not in (
            httpx.get(f"{process.operations_url}/metrics").text
        )
        # Published now (by another process), it waits in the store: nothing here delivers any
        # more, for ten of the old poll intervals and after.
        other = write_config(tmp_path / "with-events.yaml", with_events)
        publish_into(other, "order.shipped", {"n": 8})
        time.sleep(1.0)
        assert "Traceback" not in process.log()
    finally:
        process.stop()
    assert len(receiver.at("/orders")) == 1
