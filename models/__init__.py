"""Model tooling: zoo builders, cut finder, partitioner (and later profiler and planner)."""
