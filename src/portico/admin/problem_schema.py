"""The JSON Schema of a problem document (RFC 9457, docs/errors.md), as both OpenAPI documents
Portico writes give it: the admin API's, and the catalog's documents of the gateway's APIs."""

from __future__ import annotations

from typing import Any

__all__ = ["problem_schema"]


def problem_schema(description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["type", "title", "status", "request_id"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "request_id": {"type": "string"},
            "errors": {
                "type": "array",
                "description": "For `validation-failed`: every error, where and what.",
                "items": {
                    "type": "object",
                    "required": ["pointer", "message"],
                    "properties": {
                        "pointer": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    }
