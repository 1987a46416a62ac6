"""Where the control-plane binaries come from.

They are built from pinned Go modules by `hack/build-control-plane.sh`, which caches them outside
the repository and prints the directory holding them. That script is the one place that knows the
pins and the cache key; this module only runs it (a no-op when cached) or takes a directory given
explicitly for installs that have no source checkout.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "hack" / "build-control-plane.sh"


class BinariesError(RuntimeError):
    """The binaries are missing and cannot be built; the message says what to do."""


def cache_root() -> Path:
    return Path(
        os.environ.get("SIDECAR_OPERATOR_CACHE", Path.home() / ".cache" / "sidecar-operator")
    )


def ensure() -> Path:
    """Return the directory with every component, building them first if needed."""
    explicit = os.environ.get("SIDECAR_OPERATOR_BIN_DIR")
    if explicit:
        directory = Path(explicit)
    elif BUILD_SCRIPT.is_file():
        # Progress goes to our stderr as the script prints it; stdout's last line is the directory.
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
        )
        if result.returncode != 0:
            raise BinariesError(
                f"{BUILD_SCRIPT} failed with exit code {result.returncode} (its output is above)"
            )
        directory = Path(result.stdout.strip().splitlines()[-1])
    else:
        raise BinariesError(
            "no control-plane binaries: set SIDECAR_OPERATOR_BIN_DIR to a directory holding "
            f"{', '.join(COMPONENTS)}, or run from a source checkout (hack/build-control-plane.sh)"
        )
    missing = [name for name in COMPONENTS if not (directory / name).exists()]
    if missing:
        raise BinariesError(f"{directory} lacks {', '.join(missing)}")
    return directory


def kwok_stages(bin_dir: Path) -> Path:
    """kwok's stage file sits beside the binaries it was built with."""
    return bin_dir.parent / "kwok-stages.yaml"


def openapi_document(bin_dir: Path) -> Path:
    """The core/v1 OpenAPI document of the release the binaries were built from."""
    return bin_dir.parent / "openapi" / "api__v1_openapi.json"
