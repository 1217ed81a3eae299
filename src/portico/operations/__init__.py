"""The operations listener: health, readiness and Prometheus metrics, off the data plane's port."""
