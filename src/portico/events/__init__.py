"""Events and webhooks (docs/webhooks.md): the event catalog, publishing, endpoints and their
subscriptions, signed at-least-once delivery with retries, dead letters and replay, the SSRF
guard, and verified inbound webhooks."""
