"""JWT verification against a JWKS served on 127.0.0.1, with keys generated in the test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from chatcore import errors
from chatcore.auth import build_authenticator
from chatcore.auth.jwt import JwksCache, JwtAuthenticator, tier_from_claims
from chatcore.settings import Settings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.requests import Request

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TEST"
CLIENT_ID = "app-client-123"


class JwksServer:
    """Serves a mutable JWKS document and counts the requests for it."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, *keys: tuple[str, Any]) -> None:
        entries = []
        for kid, private in keys:
            public = private.public_key()
            algorithm = jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
            entry = json.loads(algorithm.to_jwk(public))
            entry.update(kid=kid, use="sig")
            entries.append(entry)
        self.document = {"keys": entries}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.server.shutdown()


@pytest.fixture
def jwks(jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> JwksServer:
    """The JWKS server with the test's two keys published and its request count reset."""
    jwks_server.publish(("rsa-1", rsa_key), ("ec-1", ec_key))
    jwks_server.requests = 0
    return jwks_server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def authenticator(jwks: JwksServer, clock: FakeClock | None = None, **options: Any) -> JwtAuthenticator:
    cache = JwksCache(jwks.url, clock=clock or FakeClock())
    config: dict[str, Any] = {"issuer": ISSUER, "audiences": (CLIENT_ID,), "tier_claim": "custom:tier",
                              "leeway_s": 30.0, **options}
    return JwtAuthenticator(jwks=cache, **config)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "sub": "user-42", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
            "custom:tier": "pro", "token_use": "id"}
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def sign(private: Any, kid: str = "rsa-1", algorithm: str = "RS256", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), private, algorithm=algorithm, headers={"kid": kid})


def request_with(authorization: str | None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    return Request({"type": "http", "method": "POST", "path": "/api/chat", "headers": headers})


async def test_valid_rs256_token_gives_the_principal(jwks: JwksServer, rsa_key: Any) -> None:
    principal = await authenticator(jwks).authenticate(request_with(f"Bearer {sign(rsa_key)}"))
    assert (principal.user_id, principal.tier, principal.method) == ("user-42", "pro", "jwt")


async def test_valid_es256_token(jwks: JwksServer, ec_key: Any) -> None:
    token = sign(ec_key, kid="ec-1", algorithm="ES256")
    assert (await authenticator(jwks).authenticate(request_with(f"Bearer {token}"))).user_id == "user-42"


async def test_cognito_access_token_uses_client_id(jwks: JwksServer, rsa_key: Any) -> None:
    auth = authenticator(jwks)
    token = sign(rsa_key, aud=None, client_id=CLIENT_ID, token_use="access")
    assert (await auth.authenticate(request_with(f"Bearer {token}"))).user_id == "user-42"
    other = sign(rsa_key, aud=None, client_id="another-app", token_use="access")
    with pytest.raises(errors.InvalidCredentialsError):
        await auth.authenticate(request_with(f"Bearer {other}"))


@pytest.mark.parametrize("overrides", [
    {"iss": "https://evil.example.com"},
    {"iss": None},
    {"aud": "another-app"},
    {"aud": ["x", "y"]},
    {"sub": None},
    {"sub": ""},
    {"exp": None},
    {"nbf": int(time.time()) + 3600},
], ids=["wrong-issuer", "no-issuer", "wrong-audience", "wrong-audience-list", "no-sub", "empty-sub",
        "no-exp", "not-yet-valid"])
async def test_bad_claims_are_rejected(jwks: JwksServer, rsa_key: Any, overrides: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidCredentialsError):
        await authenticator(jwks).authenticate(request_with(f"Bearer {sign(rsa_key, **overrides)}"))


async def test_expiry_honours_the_leeway(jwks: JwksServer, rsa_key: Any) -> None:
    auth = authenticator(jwks)
    recent = sign(rsa_key, exp=int(time.time()) - 5)
    assert (await auth.authenticate(request_with(f"Bearer {recent}"))).user_id == "user-42"
    expired = sign(rsa_key, exp=int(time.time()) - 120)
    with pytest.raises(errors.InvalidCredentialsError, match="expired"):
        await auth.authenticate(request_with(f"Bearer {expired}"))


async def test_tampered_token_is_rejected(jwks: JwksServer, rsa_key: Any) -> None:
    header, payload, signature = sign(rsa_key).split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["sub"] = "admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(errors.InvalidCredentialsError):
        await authenticator(jwks).authenticate(request_with(f"Bearer {header}.{forged_payload}.{signature}"))


async def test_token_signed_by_another_key_is_rejected(jwks: JwksServer) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(errors.InvalidCredentialsError):
        await authenticator(jwks).authenticate(request_with(f"Bearer {sign(stranger)}"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_alg_none_is_rejected(jwks: JwksServer) -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    token = f"{header}.{_b64(json.dumps(claims()).encode())}."
    with pytest.raises(errors.InvalidCredentialsError):
        await authenticator(jwks).authenticate(request_with(f"Bearer {token}"))


async def test_hs256_signed_with_the_public_key_is_rejected(jwks: JwksServer, rsa_key: Any) -> None:
    """The classic key-confusion attack: HMAC keyed with the (public) RSA key bytes."""
    public_pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_text = json.dumps(jwks.document["keys"][0]).encode()
    auth = authenticator(jwks)
    for secret in (public_pem, jwk_text):
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
        signing_input = f"{header}.{_b64(json.dumps(claims()).encode())}"
        signature = _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
        with pytest.raises(errors.InvalidCredentialsError):
            await auth.authenticate(request_with(f"Bearer {signing_input}.{signature}"))


async def test_algorithm_must_match_the_key_type(jwks: JwksServer, ec_key: Any) -> None:
    token = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "rsa-1"})  # EC alg, RSA kid
    with pytest.raises(errors.InvalidCredentialsError):
        await authenticator(jwks).authenticate(request_with(f"Bearer {token}"))


async def test_allowed_algorithm_list_is_enforced(jwks: JwksServer, ec_key: Any) -> None:
    token = sign(ec_key, kid="ec-1", algorithm="ES256")
    with pytest.raises(errors.InvalidCredentialsError):
        await authenticator(jwks, algorithms=("RS256",)).authenticate(request_with(f"Bearer {token}"))


@pytest.mark.parametrize("value", [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer    "])
async def test_missing_credentials(jwks: JwksServer, value: str | None) -> None:
    with pytest.raises(errors.UnauthorizedError) as caught:
        await authenticator(jwks).authenticate(request_with(value))
    assert not isinstance(caught.value, errors.InvalidCredentialsError)


@pytest.mark.parametrize("value", ["Bearer not-a-jwt", "Bearer a.b.c", "Bearer " + "x" * 10000])
async def test_malformed_tokens(jwks: JwksServer, value: str) -> None:
    with pytest.raises(errors.InvalidCredentialsError):
        await authenticator(jwks).authenticate(request_with(value))
    assert jwks.requests == 0  # garbage never reaches the issuer


async def test_unknown_kid_triggers_one_refresh(jwks: JwksServer, rsa_key: Any) -> None:
    clock = FakeClock()
    auth = authenticator(jwks, clock)
    await auth.authenticate(request_with(f"Bearer {sign(rsa_key)}"))
    await auth.authenticate(request_with(f"Bearer {sign(rsa_key)}"))
    assert jwks.requests == 1  # cached

    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.publish(("rsa-1", rsa_key), ("rsa-2", rotated))
    clock.now += 31  # past the minimum refresh interval
    assert (await auth.authenticate(request_with(f"Bearer {sign(rotated, kid='rsa-2')}"))).user_id == "user-42"
    assert jwks.requests == 2

    # A flood of made-up kids right after costs no further JWKS requests.
    for index in range(5):
        with pytest.raises(errors.InvalidCredentialsError):
            await auth.authenticate(request_with(f"Bearer {sign(rotated, kid=f'bogus-{index}')}"))
    assert jwks.requests == 2
    clock.now += 31
    with pytest.raises(errors.InvalidCredentialsError):
        await auth.authenticate(request_with(f"Bearer {sign(rotated, kid='bogus-late')}"))
    assert jwks.requests == 3


async def test_unreachable_jwks_is_a_503_not_a_401(rsa_key: Any) -> None:
    cache = JwksCache("http://127.0.0.1:9/jwks.json")  # discard port: nothing listens
    auth = JwtAuthenticator(issuer=ISSUER, audiences=(CLIENT_ID,), jwks=cache)
    with pytest.raises(errors.ServiceUnavailableError):
        await auth.authenticate(request_with(f"Bearer {sign(rsa_key)}"))


def test_tier_from_claims() -> None:
    assert tier_from_claims({"custom:tier": "Enterprise"}, "custom:tier") == "enterprise"
    assert tier_from_claims({"cognito:groups": ["staff", "pro", "free"]}, "cognito:groups") == "pro"
    assert tier_from_claims({"cognito:groups": ["staff"]}, "cognito:groups") == "free"
    assert tier_from_claims({"custom:tier": "pro; drop table"}, "custom:tier") == "free"
    assert tier_from_claims({"custom:tier": "pro"}, None) == "free"


@pytest.mark.parametrize("settings, message", [
    (Settings(auth_mode="jwt", jwt_issuer=ISSUER, jwt_audience=()), "JWT_AUDIENCE"),
    (Settings(auth_mode="jwt", jwt_audience=(CLIENT_ID,)), "JWT_ISSUER"),
    (Settings(auth_mode="jwt", jwt_issuer=ISSUER, jwt_audience=(CLIENT_ID,), jwt_algorithms=("HS256",)),
     "JWT_ALGORITHMS"),
    (Settings(auth_mode="jwt", jwt_issuer=ISSUER, jwt_audience=(CLIENT_ID,), jwt_algorithms=("none",)),
     "JWT_ALGORITHMS"),
])
def test_unsafe_jwt_configuration_is_refused(settings: Settings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_authenticator(settings)


def test_jwks_url_defaults_to_the_issuer() -> None:
    auth = build_authenticator(Settings(auth_mode="jwt", jwt_issuer=ISSUER + "/", jwt_audience=(CLIENT_ID,)))
    assert isinstance(auth, JwtAuthenticator)
    assert auth.jwks.url == ISSUER + "/.well-known/jwks.json"
