"""What users would pick instead of the operator, run on the same work by the peers bench."""
