"""Path templates: ``/orders/{id}``, ``/files/{rest:path}``, compiled to a regular expression once.

A template is made of ``/``-separated segments; a segment is a literal, ``{name}`` (exactly one
non-empty segment) or, as the last segment only, ``{name:path}`` (the rest of the path, which may
be empty or contain slashes; ``/v1/{rest:path}`` takes ``/v1`` too). Templates match the decoded,
canonical path (:func:`portico.gateway.uri.canonical_path`), and one trailing ``/`` is
insignificant: ``/partner/orders`` also matches ``/partner/orders/``, which most backends serve
alike.

The config validates the templates a user writes with :meth:`PathTemplate.parse`, the gateway's
router matches with them and a route's ``upstream_path`` is expanded with them; so they live
below both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}$")


@dataclass(frozen=True, slots=True)
class PathTemplate:
    source: str
    regex: re.Pattern[str]
    names: tuple[str, ...]
    literal_segments: int
    literal_chars: int
    catch_all: bool

    @classmethod
    def parse(cls, template: str) -> PathTemplate:
        if not template.startswith("/"):
            raise ValueError("a path template must start with /")
        # One trailing slash is insignificant (see the module docstring).
        body = template[1:-1] if len(template) > 1 and template.endswith("/") else template[1:]
        segments = body.split("/")
        pattern = ["^"]
        names: list[str] = []
        literal_segments = literal_chars = 0
        catch_all = False
        for index, segment in enumerate(segments):
            if not segment.endswith(":path}"):
                pattern.append("/")
            if "{" in segment or "}" in segment:
                m = _PARAM.match(segment)
                if m is None:
                    raise ValueError(
                        f"segment {segment!r} is not a literal, {{name}} or {{name:path}}"
                    )
                name, converter = m.group(1), m.group(2)
                if name in names:
                    raise ValueError(f"parameter {name!r} appears twice")
                names.append(name)
                if converter == "path":
                    if index != len(segments) - 1:
                        raise ValueError(f"{{{name}:path}} must be the last segment")
                    catch_all = True
                    # /v1/{rest:path} also takes /v1 (rest empty): the slash is insignificant.
                    pattern.append(f"(?:/(?P<{name}>.*))?")
                else:
                    pattern.append(f"(?P<{name}>[^/]+)")
            else:
                literal_segments += 1 if segment else 0
                literal_chars += len(segment)
                pattern.append(re.escape(segment))
        if not catch_all and body:
            pattern.append("/?")
        pattern.append("$")
        return cls(
            template,
            re.compile("".join(pattern)),
            tuple(names),
            literal_segments,
            literal_chars,
            catch_all,
        )

    @property
    def shape(self) -> str:
        """The template with its parameter names left out: two routes of one shape match the
        same paths."""
        return _PLACEHOLDER.sub(lambda m: "{:path}" if m.group(2) else "{}", self.source).rstrip(
            "/"
        )

    def match(self, path: str) -> dict[str, str] | None:
        """The parameters, as decoded as the path is (never decoded a second time)."""
        m = self.regex.match(path)
        if m is None:
            return None
        return m.groupdict("")

    def expand(self, params: dict[str, str]) -> str:
        """Fill ``{name}`` / ``{name:path}`` placeholders (used for upstream path rewrites).

        Values are the decoded parameters; they are percent-encoded again, so a decoded ``/``,
        space or CR LF can neither change the path's shape nor break the request line.
        """

        def fill(m: re.Match[str]) -> str:
            value = params.get(m.group(1), "")
            return quote(value, safe="/" if m.group(2) else "")

        return _PLACEHOLDER.sub(fill, self.source)
