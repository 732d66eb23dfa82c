"""The deploy recipes (deploy/*.yaml) parse, and what they run is what `toolkit serve` accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from toolkit.cli import app

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _docs(name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)
    return docs


def _accepted(args: list[str]) -> click.Context:
    """Parse ``args`` (after the image's ``toolkit`` entry point) as the CLI would; raises on a bad flag."""
    import typer.main

    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    command = group.get_command(click.Context(group), args[0])
    assert command is not None, f"no command {args[0]!r}"
    return command.make_context(args[0], list(args[1:]), resilient_parsing=False)


def _port(args: list[str]) -> int:
    return int(args[args.index("--port") + 1])


def test_the_deployment_is_ready_only_through_the_gate_and_keeps_old_pods() -> None:
    deployment, service = _docs("kubernetes/deployment.yaml")
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    spec = deployment["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    [container] = spec["template"]["spec"]["containers"]
    ctx = _accepted(container["args"])
    assert ctx.params["model"] == "credit@production" and ctx.params["follow"] is True
    assert ctx.params["on_mismatch"] == "hold" and ctx.params["policy"] == "strict"
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": _port(container["args"])}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > ctx.params["drain_timeout"]
    assert service["spec"]["ports"][0]["targetPort"] == _port(container["args"])
    assert "@sha256:" in container["image"]


def test_the_gate_init_container_runs_in_the_servers_image() -> None:
    [deployment] = _docs("kubernetes/gate-init-container.yaml")
    pod = deployment["spec"]["template"]["spec"]
    pull, gate = pod["initContainers"]
    assert _accepted(gate["args"]).params["policy"] == "strict"
    assert gate["args"][0] == "check-env" and pull["args"][0] == "pull"
    assert {c["image"] for c in [gate, *pod["containers"]]} == {gate["image"]}


def test_the_kserve_runtime_points_at_toolkit_serve_over_v2() -> None:
    runtime, service = _docs("kserve/servingruntime.yaml")
    assert runtime["kind"] == "ServingRuntime" and runtime["apiVersion"].startswith("serving.kserve.io/")
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    [container] = runtime["spec"]["containers"]
    ctx = _accepted(container["args"])
    assert ctx.params["model"] == "/mnt/models" and ctx.params["host"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["ports"][0]["containerPort"] == _port(container["args"])
    assert service["kind"] == "InferenceService"
    assert service["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]


def test_the_compose_file_publishes_on_loopback_only() -> None:
    [compose] = _docs("compose.yaml")
    [(_name, svc)] = compose["services"].items()
    ctx = _accepted(svc["command"])
    assert ctx.params["model"].startswith("/models/")
    assert svc["ports"] == [f"127.0.0.1:8080:{_port(svc['command'])}"]
    assert any(v.endswith(":/models:ro") for v in svc["volumes"])
    assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"])


@pytest.mark.parametrize("bad", [["serve", "m.joblib", "--no-such-flag"], ["serve"]])
def test_the_recipe_check_catches_a_flag_the_cli_refuses(bad: list[str]) -> None:
    with pytest.raises(click.UsageError):
        _accepted(bad)
