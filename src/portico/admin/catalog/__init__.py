"""The API catalog (docs/catalog.md): each service with what the config says of it (owner,
tags, API and version, lifecycle, audience), the operations its routes expose and the scopes
they need, and one merged OpenAPI 3.1 document per audience.

- :mod:`.documents`: the services' OpenAPI documents, read once per change of their file;
- :mod:`.operations`: which operation of a service's document each route exposes, at which
  path of the gateway, with which authentication, or one made up from the route without one;
- :mod:`.security`: the security schemes and requirements of the routes' ``auth`` entries;
- :mod:`.openapi`: the merged document of an audience (``portico catalog export`` and
  ``GET /admin/v1/catalog/openapi``).

Importing these imports no web framework: ``portico catalog export`` runs without FastAPI.
"""
