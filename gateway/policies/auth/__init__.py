"""Authentication and authorization policies, one module per concern.

    api_key.py    `api_key`: keys from a header or query parameter, checked against the key file
    keystore.py   the key file: records, hashing, atomic writes, the reloading index
    keys_cli.py   `portcullis keys add | list | revoke`
    jwt.py        `jwt`: bearer tokens verified against pinned issuers
    jwks.py       where token keys come from: a secret, a JWKS file or URL (cached, rotated)
    authorize.py  `authorize`: required scopes and allowed consumers, per route
    principal.py  how an outcome is written on the `Call` (principal granted, failure rejected)

On the request path the authentication policies come first in the `policies:` list and
`authorize` after them; a rate limiter placed after both can read `call.consumer` and
`call.attributes["tier"]`. Each module is importable on its own; the registry imports them.
"""
