"""The cluster, reached: the one API client, the workload lists and watches, Events."""
