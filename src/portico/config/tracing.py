"""The ``tracing`` section: OpenTelemetry spans exported over OTLP (docs/tracing.md)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, StrictBool, ValidationInfo, field_validator

from portico.config.fields import Duration, HeaderName, Model

__all__ = ["TracingBatch", "TracingSettings"]


class TracingBatch(Model):
    """How finished spans wait for export: a bounded queue, sent in batches by a thread of the
    SDK's batch processor. Unset keys take the ``OTEL_BSP_*`` variables, else the SDK's
    defaults (2048 spans, 512 a batch, every 5 s)."""

    max_queue_size: int | None = Field(None, ge=1, le=1_000_000)
    """Spans waiting at most; past it, new spans are dropped (and counted)."""
    max_export_batch_size: int | None = Field(None, ge=1, le=1_000_000)
    schedule_delay: Duration | None = None
    """How long a span may wait before the batch it is in is sent."""

    @field_validator("max_export_batch_size")
    @classmethod
    def _batch_fits_queue(cls, value: int | None, info: ValidationInfo) -> int | None:
        queue = info.data.get("max_queue_size")
        if value is not None and queue is not None and value > queue:
            raise ValueError("max_export_batch_size cannot be larger than max_queue_size")
        return value

    @field_validator("schedule_delay")
    @classmethod
    def _some_delay(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("schedule_delay must be longer than 0")
        return value


class TracingSettings(Model):
    """OpenTelemetry traces of the exchanges, exported over OTLP/HTTP (docs/tracing.md). Off
    unless ``enabled``; a key left unset takes the standard ``OTEL_*`` variable the SDK reads
    for it, else the SDK's default."""

    enabled: StrictBool = False
    endpoint: str | None = None
    """The collector's base URL (``http://collector:4318``); ``/v1/traces`` is appended, as
    for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    protocol: Literal["http/protobuf"] = "http/protobuf"
    headers: dict[HeaderName, str] = {}
    """Sent with every export (``Authorization: Bearer ${OTLP_TOKEN}``)."""
    timeout: Duration | None = None
    """Longest time one export may take, its retries included (the SDK's default: 10 s)."""
    compression: Literal["none", "gzip"] | None = None
    sample_ratio: float | None = Field(None, ge=0.0, le=1.0)
    """The share of new traces recorded; a request whose caller sent ``traceparent`` follows
    the caller's decision (parent-based). Unset: ``OTEL_TRACES_SAMPLER``, else every trace."""
    service_name: str | None = Field(None, min_length=1)
    """The ``service.name`` of the spans: ``OTEL_SERVICE_NAME`` when unset, else ``portico``."""
    resource: dict[str, str] = {}
    """More resource attributes (``deployment.environment.name: prod``)."""
    batch: TracingBatch = TracingBatch()
    shutdown_timeout: Duration = 5.0
    """On shutdown, how long the spans still queued get to be exported."""

    @field_validator("endpoint")
    @classmethod
    def _collector_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected the collector's http:// or https:// URL, with a host")
        if parts.query or parts.fragment:
            raise ValueError("the collector's URL cannot have a query or fragment")
        return value

    @field_validator("resource")
    @classmethod
    def _attribute_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name.strip():
                raise ValueError("a resource attribute needs a name")
        return value
