"""The control plane's admin API: its tokens and roles, its endpoints, and the listener that
serves it (docs/admin-api.md).

Importing this package imports nothing: ``portico check`` and ``portico --help`` load
``portico.admin.cli`` (to register ``portico admin``) without FastAPI or uvicorn, which only
:mod:`portico.admin.app` and :mod:`portico.admin.listener` bring in.
"""
