"""Cold reads: the tiered reader, its buffer pool and prefetch, and record visibility."""
