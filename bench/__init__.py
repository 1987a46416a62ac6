"""`make bench`: rollout throughput against a bare client, API writes, memory, reaction."""
