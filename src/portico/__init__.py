"""Portico: a self-hosted Open API integration platform."""

# First of all, before any compiled module can be imported: the mypyc-compiled hot path is used
# only while it matches its sources (see portico._native).
from portico import _native

_native.install()
