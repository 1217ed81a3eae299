"""Events and webhooks: events, endpoints, the delivery queue and log, inbound webhook ids.

The published events; the webhook endpoints and their sealed secrets; the delivery queue and
the attempts of the delivery log; the ids of inbound webhooks already received.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=True),
        sa.Column("publisher", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=("pk_events")),
        sa.UniqueConstraint(
            "publisher", "idempotency_key", name=("uq_events_publisher_idempotency_key")
        ),
    )
    op.create_index(("ix_events_created_at"), "events", ["created_at"], unique=False)
    op.create_index(("ix_events_type"), "events", ["type"], unique=False)
    op.create_table(
        "inbound_webhooks",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "message_id", name=("pk_inbound_webhooks")),
    )
    op.create_index(
        ("ix_inbound_webhooks_received_at"), "inbound_webhooks", ["received_at"], unique=False
    )
    op.create_table(
        "webhook_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("endpoint_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(precision=53), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("response_headers", sa.JSON(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=("pk_webhook_attempts")),
    )
    op.create_index(("ix_webhook_attempts_at"), "webhook_attempts", ["at"], unique=False)
    op.create_index(
        ("ix_webhook_attempts_delivery_id"), "webhook_attempts", ["delivery_id"], unique=False
    )
    op.create_index(
        ("ix_webhook_attempts_endpoint_id"), "webhook_attempts", ["endpoint_id"], unique=False
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("endpoint_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("ordering_key", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due", sa.Float(precision=53), nullable=False),
        sa.Column("claimed_until", sa.Float(precision=53), nullable=True),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("published_at", sa.Float(precision=53), nullable=False),
        sa.Column("first_attempt_at", sa.Float(precision=53), nullable=True),
        sa.Column("finished_at", sa.Float(precision=53), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["status", "due"], unique=False
    )
    op.create_index(
        ("ix_webhook_deliveries_event_id"), "webhook_deliveries", ["event_id"], unique=False
    )
    op.create_index(
        "ix_webhook_deliveries_fifo",
        "webhook_deliveries",
        ["endpoint_id", "ordering_key", "status", "id"],
        unique=False,
    )
    op.create_index(
        ("ix_webhook_deliveries_finished_at"), "webhook_deliveries", ["finished_at"], unique=False
    )
    op.create_table(
        "webhook_endpoint_secrets",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("endpoint_id", sa.Text(), nullable=False),
        sa.Column("sealed_secret", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=("pk_webhook_endpoint_secrets")),
    )
    op.create_index(
        ("ix_webhook_endpoint_secrets_endpoint_id"),
        "webhook_endpoint_secrets",
        ["endpoint_id"],
        unique=False,
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("types", sa.JSON(), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=True),
        sa.Column("rate_limit", sa.Float(), nullable=True),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("ordering_key", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("failing_since", sa.Float(precision=53), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=("pk_webhook_endpoints")),
    )
    op.create_index(
        ("ix_webhook_endpoints_consumer"), "webhook_endpoints", ["consumer"], unique=False
    )
    op.create_index(("ix_webhook_endpoints_tenant"), "webhook_endpoints", ["tenant"], unique=False)


def downgrade() -> None:
    op.drop_table("webhook_endpoints")
    op.drop_table("webhook_endpoint_secrets")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_attempts")
    op.drop_table("inbound_webhooks")
    op.drop_table("events")
