"""Demo gRPC backends that tests and `make run` put behind the gateway, with their serving plumbing."""
