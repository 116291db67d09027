"""The demo WebSocket chat backend: a `websockets` server that the gateway reaches through passthrough.

Owns one chat room per server: every text or binary message a client sends is broadcast, as the
same frame type, to every client connected (the sender included), so a lone client gets an echo;
with `broadcast=False` (`--echo`) every client is a room of its own and only gets its own messages
back (the benchmark's many independent clients).
It speaks the subprotocols `chat.v1` and `chat.v2` (the first one the client offers; none if it
offers neither) and greets nobody. Test hooks, in a text message:
  "__close__:<code>:<reason>"  the server closes this client's connection with that code and reason.
  "__big__:<n>"                the server sends this client one text message of n "x" characters.
  "__whoami__"                 the server answers this client with a JSON object of what it saw:
                               the negotiated subprotocol and the request headers it received.
`ChatServer.received` counts the messages received, for backpressure tests.

Run it with `python -m tests.support.chat_backend [--address 127.0.0.1:50063] [--echo]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

DEFAULT_ADDRESS = "127.0.0.1:50063"
SUBPROTOCOLS = ("chat.v1", "chat.v2")


@dataclass
class ChatServer:
    """A started chat server; `url` is what a client dials."""

    server: Server
    url: str
    broadcast: bool = True
    received: int = 0
    clients: set[ServerConnection] = field(default_factory=set)

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def _handler(chat: ChatServer, connection: ServerConnection) -> None:
    chat.clients.add(connection)
    try:
        async for message in connection:
            chat.received += 1
            if isinstance(message, str) and message.startswith("__") and await _hook(connection, message):
                continue
            if chat.broadcast:
                broadcast(chat.clients, message)
            else:
                await connection.send(message)
    except ConnectionClosed:
        pass  # a close with an error code (or none): the client is gone either way
    finally:
        chat.clients.discard(connection)


async def _hook(connection: ServerConnection, text: str) -> bool:
    if text.startswith("__close__:"):
        _, code, reason = text.split(":", 2)
        await connection.close(int(code), reason)
        return True
    if text.startswith("__big__:"):
        await connection.send("x" * int(text.removeprefix("__big__:")))
        return True
    if text == "__whoami__":
        headers = {k.lower(): v for k, v in connection.request.headers.raw_items()} if connection.request else {}
        await connection.send(json.dumps({"subprotocol": connection.subprotocol, "headers": headers}))
        return True
    return False


async def start(
    address: str = "127.0.0.1:0", max_size: int = 16 * 1024 * 1024, broadcast: bool = True
) -> ChatServer:
    """Serve on `address` (port 0 picks one); the caller stops it."""
    host, _, port = address.rpartition(":")
    chat: ChatServer | None = None

    async def handler(connection: ServerConnection) -> None:
        assert chat is not None
        await _handler(chat, connection)

    def select_subprotocol(_connection: ServerConnection, offered: Sequence[str]) -> str | None:
        # The client's first choice we speak; none at all is fine too (websockets would refuse).
        return next((p for p in offered if p in SUBPROTOCOLS), None)  # type: ignore[return-value]

    server = await serve(
        handler, host, int(port), select_subprotocol=select_subprotocol, max_size=max_size,  # type: ignore[arg-type]
        compression=None,
    )
    bound = next(iter(server.sockets)).getsockname()[1]
    chat = ChatServer(server, f"ws://{host}:{bound}/chat", broadcast)
    return chat


async def _main(address: str, broadcast: bool) -> None:
    chat = await start(address, broadcast=broadcast)
    logging.getLogger(__name__).info("chat backend on %s", chat.url)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await chat.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Portcullis demo WebSocket chat backend")
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help=f"host:port (default {DEFAULT_ADDRESS})")
    parser.add_argument("--echo", action="store_true", help="send each message back to its sender only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_main(args.address, not args.echo))


if __name__ == "__main__":
    main()
