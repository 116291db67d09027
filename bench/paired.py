"""The paired block: the issue-3 policy gateways measured in turns with a no-policy one, once per repeat.

Owns the order of the policy measurements. Throughput on the shared machine drifts by ±20% over
minutes, so each policy sample is measured right next to a sample of its own baseline: the same
`portcullis serve --workers 1` without policies (scenario `policies-base`), the same endpoint and
connection count. All of the block's gateways are started once per repeat and stay up, each idle
but the one under load, so no start-up falls between two samples of a pair; each gateway must
pass the functional check and, with policies, the pre-check of `bench/policies.py` before any
load. Per endpoint and connection count: a short warm-up of every gateway, then the samples in
`bench.pairs.block_order` (B P1 P2 B P2 P1 B ...), each audited like any policy run. There are no
re-measurements of disturbed samples here: a repeated sample would no longer sit next to its
pair. The maths of the pairs is `bench/pairs.py`.
"""

from __future__ import annotations

from contextlib import ExitStack

from bench.gateways import ENDPOINTS, Endpoint
from bench.loadgen import LoadError
from bench.pairs import block_order
from bench.procs import StartError
from bench.runner import Gateway, Load, NotReady, Runner, one_block
from bench.samples import POLICIES_BASE

WARM_MAX_S = 1.0  # warm-up per gateway, endpoint and connection count in a block


def run_block(runner: Runner, repeat: int) -> None:
    """Start the block's gateways, measure them in turns, stop them all (by PID, on any exit)."""
    settings = runner.settings
    wanted = [s for s in settings.policy_scenarios if s not in runner.broken]
    if not wanted:
        return
    with ExitStack() as stack:
        # All start at once (their start-ups overlap on the two cores), then each must pass its checks.
        starting: list[Gateway] = []
        for scenario in (POLICIES_BASE, *wanted):
            gw = runner.gateway(scenario)
            try:
                runner.announce(gw, repeat)
                stack.enter_context(gw.proc.start())
                starting.append(gw)
            except StartError as exc:
                _failed(runner, gw, exc)
        up: list[Gateway] = []
        for gw in starting:
            try:
                runner.ready(gw)
                up.append(gw)
            except (StartError, NotReady) as exc:
                _failed(runner, gw, exc)
        if not up or up[0].scenario != POLICIES_BASE:
            return  # nothing to pair with in this repeat
        by_name = {gw.scenario: gw for gw in up}
        policies = [s for s in wanted if s in by_name]
        if not policies:
            return
        for e, ep in enumerate(ENDPOINTS):
            for conns in settings.policy_conns:
                loads = {gw.scenario: runner.wrk(gw, ep, conns) for gw in up}
                try:
                    warm = min(WARM_MAX_S, settings.warm_s)
                    if warm > 0:
                        for load in loads.values():
                            load(warm, None)
                    order = block_order(policies, settings.pair_rounds, flip=(repeat + e) % 2 == 1)
                    print(f"[bench]   paired: {' '.join(order)}", flush=True)
                    for scenario in order:
                        gw = by_name[scenario]
                        _sample(runner, gw, ep, conns, repeat, loads[scenario])
                        runner.check_alive(gw)
                except StartError as exc:
                    runner.problem(f"paired block, repeat {repeat + 1}: {one_block(str(exc))}")
                    return
                except LoadError as exc:
                    runner.problem(f"paired block warm-up, {ep.name} c{conns}: {one_block(str(exc))}")


def _failed(runner: Runner, gw: Gateway, exc: Exception) -> None:
    gw.proc.stop()  # at once, not at the end of the block: only the gateway under load may use CPU
    if gw.scenario != POLICIES_BASE:
        runner.broken.add(gw.scenario)  # a policy gateway that fails its pre-check stays failed
    runner.not_measured(gw, exc)


def _sample(runner: Runner, gw: Gateway, ep: Endpoint, conns: int, repeat: int, load: Load) -> None:
    """One sample of the block; a failed load is a problem and leaves a gap (its pairs are dropped)."""
    try:
        sample = runner.measure(
            gw.scenario, ep, conns, repeat, gw.proc, load, gw.policy, runner.settings.pair_dur_s
        )
    except LoadError as exc:
        runner.problem(f"{gw.scenario} {ep.name} c{conns} repeat {repeat + 1}: {one_block(str(exc))}")
        return
    runner.keep(sample)
