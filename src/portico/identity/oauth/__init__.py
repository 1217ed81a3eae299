"""Portico as an OAuth 2.0 authorization server (client credentials grant).

- :mod:`~portico.identity.oauth.server`: the token, introspection, revocation, JWKS and metadata
  endpoints, served by the gateway itself;
- :mod:`~portico.identity.oauth.clients`: which consumers are clients, and client
  authentication (``client_secret_basic``, ``client_secret_post``, ``private_key_jwt``);
- :mod:`~portico.identity.oauth.tokens`: JWT access tokens (RFC 9068), issued and verified;
- :mod:`~portico.identity.oauth.keys`: signing keys, rotation windows and the JWKS;
- :mod:`~portico.identity.oauth.state`: what every gateway process keeps in memory, kept current
  from the store (:mod:`~portico.identity.oauth.repository`);
- :mod:`~portico.identity.oauth.authn`: the ``oauth`` authentication method of routes;
- :mod:`~portico.identity.oauth.cli`: ``portico oauth rotate-key`` and ``portico oauth keys``.
"""
