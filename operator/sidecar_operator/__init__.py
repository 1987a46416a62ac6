"""sidecar-operator: sidecars added to, updated on and removed from live workloads."""
