"""The `inference:` config: per-model serving keys, policy overrides by route, the error table."""

from __future__ import annotations

import grpc
import pytest
from pydantic import ValidationError

from gateway.call import Call
from gateway.config import GatewayConfig
from gateway.inference import gateway_error
from gateway.inference_config import InferenceConfig
from gateway.policies import PolicyConfigError, build_pipeline
from gateway.policies.auth.authorize import AuthorizePolicy
from screening.serving import errors

BASE = {
    "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
    "backends": {"echo": {"addresses": ["127.0.0.1:1"]}},
    "services": {"echo.v1.EchoService": {"backend": "echo"}},
    "policies": [{"name": "authorize", "config": {"enabled": False}}],
}


def test_model_settings_and_validation() -> None:
    cfg = InferenceConfig.model_validate({"models": {"digits": {
        "max_batch_size": 8, "dynamic_batching": {"max_queue_delay_us": 100},
        "policies": {"authorize": {"required_scopes": ["models.digits"]}}}}})
    assert cfg.model_overrides() == {"digits": {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_us": 100}}}
    with pytest.raises(ValidationError, match="one path segment"):
        InferenceConfig.model_validate({"models": {"a/b": {}}})
    with pytest.raises(ValidationError, match="max_batch_size"):
        InferenceConfig.model_validate({"models": {"digits": {"max_batch_size": -1}}})


def test_policy_overrides_apply_per_model_and_per_route_kind() -> None:
    config = GatewayConfig.model_validate({**BASE, "inference": {
        "policies": {"authorize": {"enabled": True}},
        "server_policies": {"authorize": {"enabled": False}},
        "models": {"digits": {"policies": {"authorize": {"required_scopes": ["models.digits"]}}}},
    }})
    (policy,) = build_pipeline(config).policies
    assert isinstance(policy, AuthorizePolicy)

    def settings(route: str) -> tuple[bool, tuple[str, ...]]:
        call = Call("r", "POST", "/v2", "127.0.0.1")
        call.route, call.service = route, "inference"
        found = policy.configs.for_call(call)
        return found.enabled, found.required_scopes

    assert settings("inference.digits") == (True, ("models.digits",))
    assert settings("inference.other") == (True, ())
    assert settings("inference/server") == (False, ())
    assert settings("inference/repository") == (True, ())


def test_overrides_of_unlisted_policies_fail_at_start_up() -> None:
    config = GatewayConfig.model_validate({**BASE, "inference": {"models": {"digits": {"policies": {
        "rate_limit": {"enabled": True}}}}}})
    with pytest.raises(PolicyConfigError, match="inference.models.digits.policies"):
        build_pipeline(config)
    config = GatewayConfig.model_validate({**BASE, "inference": {"policies": {"authorize": {"required_scopes": [
        "not a scope"]}}}})
    with pytest.raises(PolicyConfigError, match="inference.policies.authorize"):
        build_pipeline(config)


@pytest.mark.parametrize(("error", "code", "status"), [
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (errors.ModelNotFound, grpc.StatusCode.NOT_FOUND, 404),
    (errors.ModelNotReady, grpc.StatusCode.UNAVAILABLE, 503),
    (errors.QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (errors.LoadFailed, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (errors.InferenceFailed, grpc.StatusCode.INTERNAL, 500),
])
def test_serving_errors_map_to_one_code_and_status(error: type[errors.ServingError], code: grpc.StatusCode,
                                                    status: int) -> None:
    mapped = gateway_error(error("why"))
    assert (mapped.code, mapped.http_status, mapped.message) == (code, status, "why")
