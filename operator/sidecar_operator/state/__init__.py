"""What is watched and kept in memory (compact snapshots, the cache, the plan memo): fed by
the watches, read by the engine. No I/O."""
