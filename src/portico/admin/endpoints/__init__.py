"""The admin API's endpoints, one module per kind of entity; each exposes ``router``."""
