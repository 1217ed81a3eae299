"""The JWKS and the server metadata, read by third-party clients."""

from __future__ import annotations

import jwt
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from tests.support.oauth import BILLING_SECRET, ServingGateway, StartGateway, issuer_of, token_for


def test_pyjwkclient_verifies_a_portico_token_against_the_jwks_url(
    gateway: ServingGateway,
) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    key = jwt.PyJWKClient(f"{gateway.url}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience=issuer_of(gateway))
    assert claims["sub"] == "acme/billing"


def test_pyjwkclient_verifies_an_rs256_token(start: StartGateway) -> None:
    gateway = start(algorithm="RS256")
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    key = jwt.PyJWKClient(f"{gateway.url}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token, key, algorithms=["RS256"], audience=issuer_of(gateway), issuer=issuer_of(gateway)
    )
    assert claims["client_id"] == "billing-app"


def test_jwks_publishes_only_public_key_material(gateway: ServingGateway) -> None:
    with gateway.client() as client:
        response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jwk-set+json"
    (key,) = response.json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA"
    assert key["use"] == "sig"
    assert "d" not in key
    signing = gateway.oauth.keyring.signing
    assert signing is not None and key["kid"] == signing.kid


def test_metadata_document_describes_the_server(gateway: ServingGateway) -> None:
    with gateway.client() as client:
        response = client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    document = response.json()
    metadata = AuthorizationServerMetadata(document)
    metadata.validate_issuer()
    metadata.validate_token_endpoint()
    metadata.validate_jwks_uri()
    metadata.validate_grant_types_supported()
    metadata.validate_token_endpoint_auth_methods_supported()
    metadata.validate_introspection_endpoint()
    metadata.validate_revocation_endpoint()
    issuer = issuer_of(gateway)
    assert document["issuer"] == issuer
    assert document["token_endpoint"] == f"{issuer}/oauth2/token"
    assert document["introspection_endpoint"] == f"{issuer}/oauth2/introspect"
    assert document["revocation_endpoint"] == f"{issuer}/oauth2/revoke"
    assert document["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert document["grant_types_supported"] == ["client_credentials"]
    assert set(document["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }
    assert "HS256" not in document["token_endpoint_auth_signing_alg_values_supported"]
    # The advertised token endpoint works.
    with gateway.client() as client:
        token = client.post(
            document["token_endpoint"],
            data={"grant_type": "client_credentials"},
            auth=("billing-app", BILLING_SECRET),
        )
    assert token.status_code == 200
