"""What the commands that read the cluster say when there is none to read: one line naming the
cause, as kubectl does, rather than a traceback (`kubectl sidecars rollout` and `preview`); the
operator exits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.kube import BIN, KUBECTL, REPO, SIDECAR_OPERATOR, run

POLICY = REPO / "manifests" / "samples" / "log-shipping.yaml"


def _unreachable(tmp_path: Path) -> Path:
    """A kubeconfig whose server refuses connections (a port nobody listens on)."""
    kubeconfig = tmp_path / "kubeconfig"
    cluster = {"server": f"https://127.0.0.1:{free_port()}", "insecure-skip-tls-verify": True}
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": cluster}],
                "users": [{"name": "me", "user": {"token": "t"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "me"}}],
                "current-context": "gone",
            }
        )
    )
    return kubeconfig


def _kubeconfigs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each case: the kubeconfig, and what the error must say."""
    return {
        "unreachable": (_unreachable(tmp_path), "Cannot connect to host 127.0.0.1"),
        "missing": (tmp_path / "absent", "no cluster to talk to"),
    }


@pytest.mark.parametrize("case", ["unreachable", "missing"])
@pytest.mark.parametrize("command", [["status", "logs", "--no-watch"], ["history", "logs"]])
def test_the_rollout_plugin_says_why_in_one_line(
    tmp_path: Path, case: str, command: list[str]
) -> None:
    kubeconfig, said = _kubeconfigs(tmp_path)[case]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{BIN}:{os.environ['PATH']}"}
    result = run([KUBECTL, "sidecars", "rollout", *command], env=env, check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and said in errors[0], result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("case", ["unreachable", "missing"])
def test_a_cluster_preview_without_a_cluster_says_why_and_exits_2(
    tmp_path: Path, case: str
) -> None:
    kubeconfig, said = _kubeconfigs(tmp_path)[case]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    result = run([SIDECAR_OPERATOR, "preview", "-f", str(POLICY)], env=env, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and said in errors[0], result.stderr
    assert "Traceback" not in result.stderr and not result.stdout, result.stderr


def test_the_operator_without_a_kubeconfig_exits_saying_so(tmp_path: Path) -> None:
    """It retried its start-up every 60 s for ever, a Running pod that did nothing; no retry
    mends a missing configuration, so it exits (a crash-looping pod, its log saying why)."""
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "absent")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    result = run([SIDECAR_OPERATOR, "run"], env=env, check=False, timeout=60)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "failed permanently: no cluster to talk to" in result.stderr, result.stderr[-2000:]
    assert "locals" not in result.stderr  # no variables (credentials) printed with the traceback
