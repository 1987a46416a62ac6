"""The image's contents, built the way the Dockerfile builds them (there is no container engine
here): the wheel and the locked dependencies in a clean virtual environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.kube import REPO, run


def test_the_image_build_gives_a_working_command_and_no_dev_tools(tmp_path: Path) -> None:
    uv = os.environ.get("UV")
    assert uv, "UV (the uv binary) must be set; `make test` sets it"
    venv = tmp_path / "venv"
    run(["bash", str(REPO / "hack" / "install-venv.sh"), str(venv)], timeout=600)

    help_text = run([str(venv / "bin" / "sidecar-operator"), "--help"]).stdout
    assert "run" in help_text and "dev" in help_text
    # The image sets SIDECAR_OPERATOR_LOG_FORMAT=json; the command must read it.
    wrong = run(
        [str(venv / "bin" / "sidecar-operator"), "run"],
        check=False,
        env={**os.environ, "SIDECAR_OPERATOR_LOG_FORMAT": "xml"},
    )
    assert wrong.returncode == 2 and "use console or json" in wrong.stderr
    assert not (venv / "bin" / "pytest").exists()
    assert not (venv / "bin" / "kubectl").exists()


def test_the_dockerfile_runs_the_operator_as_non_root_with_json_logs() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert 'ENTRYPOINT ["sidecar-operator", "run"]' in final_stage
    assert "USER 65532:65532" in final_stage
    assert "SIDECAR_OPERATOR_LOG_FORMAT=json" in final_stage
    assert "pip install" not in final_stage and "uv" not in final_stage.split("ENV", 1)[0]


def test_the_run_path_does_not_load_the_local_control_plane() -> None:
    """`devcluster` is the dev commands' alone, and `cryptography` is loaded only to generate
    the webhook's certificate."""
    code = (
        "import sys\n"
        "import sidecar_operator.cli, sidecar_operator.handlers\n"
        "dev = ('sidecar_operator.devcluster', 'cryptography')\n"
        "loaded = [m for m in sys.modules if m.startswith(dev)]\n"
        "assert not loaded, loaded\n"
    )
    run([sys.executable, "-c", code])
