"""A local Kubernetes control plane (etcd, apiserver, controller-manager, scheduler, kwok)."""

from sidecar_operator.devcluster.binaries import BinariesError
from sidecar_operator.devcluster.cluster import Cluster, ClusterError
from sidecar_operator.devcluster.lifecycle import down, is_up, restart, up

__all__ = ["BinariesError", "Cluster", "ClusterError", "down", "is_up", "restart", "up"]
