"""`make chaos`: the operator driven through faults and bad input on the local control plane,
each trial ending with an audit of the cluster's actual state. Not part of `make test`."""
