"""Request handlers by transport: REST (unary and server streaming) and admin."""
