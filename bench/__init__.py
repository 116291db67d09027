"""The core transcoding and policy-cost benchmark (issues 2 and 3), run by `make bench-core`, figures to
`docs/benchmarks.md`; the other benchmarks (`inference`, `screening`, `websocket`) live here too.

It owns nothing on the request path: it starts the peer's Go echo backend, puts grpc-gateway and
Portcullis in front of it one after the other, loads each with wrk (and the backend alone with
h2load as the baseline), reads the CPU each process spent from `/proc`, and writes the report.
`procs` starts, watches and stops processes by PID; `loadgen` runs and parses wrk and h2load;
`gateways` knows how each system under test is built, configured and checked; `paired` measures the
issue-3 policy gateways in turns with a no-policy one and `pairs` turns those samples into per-pair
ratios; `report` and `policy_report` turn the samples into medians, ratios and markdown. Every
address is 127.0.0.1.
"""
