"""Carrying plans out: the per-policy worker, the writer, the reporter, leadership."""
