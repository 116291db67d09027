"""The lean asyncio HTTP/2 gRPC client behind `gateway.upstream.Upstream` (the "h2" backend client).

`gateway/upstream.py` keeps the `Upstream` protocol, `UnaryResult` and the grpc.aio implementation;
this package is the other implementation, one module per layer, bottom up:
  huffman.py     HPACK's Huffman code (decoding)
  headers.py     HPACK: pre-encoded request header blocks, a caching response decoder
  frames.py      HTTP/2 frame constants, builders and splitter
  grpc_wire.py   gRPC over HTTP/2: message framing, grpc-timeout, status mapping, metadata
  connection.py  one connection: an asyncio.Protocol multiplexing calls, flow control, deadlines
  h2.py          H2Upstream: connections per address, reconnect backoff, health checks
Everything below `connection.py` is pure and tested without sockets.
"""
