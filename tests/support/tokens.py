"""Signing keys made in the test (RSA, EC, Ed25519, HMAC), their public JWKs, and tokens signed with them.

Also the two forgeries a verifier must refuse: an unsigned `alg: none` token, and an HS256 token
whose HMAC secret is the RSA public key (the HS/RS confusion).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.test"
AUDIENCE = "portcullis"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: Any  # a cryptography private key

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            doc = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            doc = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            doc = OKPAlgorithm.to_jwk(public, as_dict=True)
        return {**doc, "kid": self.kid, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], alg: str | None = None, kid: str | None = None,
             with_kid: bool = True) -> str:
        headers = {"kid": kid or self.kid} if with_kid else None
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers=headers)


@functools.cache
def rsa_key(kid: str, alg: str = "RS256") -> SigningKey:
    return SigningKey(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))


@functools.cache
def ec_key(kid: str, alg: str = "ES256") -> SigningKey:
    curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[alg]
    return SigningKey(kid, alg, ec.generate_private_key(curve))


@functools.cache
def ed_key(kid: str) -> SigningKey:
    return SigningKey(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys]}


def claims(iss: str = ISSUER, aud: str | list[str] = AUDIENCE, sub: str = "alice", ttl: int = 300,
           **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": now + ttl, **extra}


def hmac_token(claims: dict[str, Any], secret: bytes, alg: str = "HS256", kid: str | None = None) -> str:
    return jwt.encode(claims, secret, algorithm=alg, headers={"kid": kid} if kid else None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def unsigned_token(claims: dict[str, Any], kid: str | None = None, alg: str = "none") -> str:
    """`alg: none` (or a spelling of it), no signature."""
    header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
    return _segments(header, claims) + "."


def confused_token(claims: dict[str, Any], key: SigningKey) -> str:
    """HS256 with the RSA public key (PEM) as the HMAC secret: what PyJWT itself refuses to make."""
    signing_input = _segments({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims)
    signature = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)
