"""The lean asyncio HTTP/2 gRPC client behind `gateway.upstream.Upstream` (the "h2" backend client).

`gateway/upstream.py` keeps the `Upstream` protocol, `UnaryResult` and the grpc.aio implementation;
this package is the other implementation, one module per layer, bottom up:
  huffman.py     HPACK's Huffman code (decoding)
  headers.py     HPACK: pre-encoded request header blocks, a caching response decoder
  frames.py      HTTP/2 frame constants, builders and splitter
  grpc_wire.py   gRPC over HTTP/2: message framing, grpc-timeout, status mapping, metadata
  calls.py       one call's state, admission under the peer's stream limit, what a response means
  session.py     one connection's shared state: open calls, windows, corked writes, closing
  deadlines.py   the connection's one deadline timer over its calls' deadlines
  caller.py      the calls the upstream makes: start, send under flow control, read a stream
  connection.py  H2Connection, the asyncio.Protocol: frames in, dispatched in one pass
  h2.py          H2Upstream: connections per address, reconnect backoff, health checks
Everything below `session.py` is pure and tested without sockets; `session.py` up to
`connection.py` are the layers of one object, `H2Connection`.
"""
