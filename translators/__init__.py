"""Pure REST/JSON <-> protobuf translation: no aiohttp, no sockets.

(method, path, query, headers, body bytes) in, (binding, message, metadata) out; a message or a
status back to (status, headers, body). The gateway calls this library; its tests need no sockets.
"""
