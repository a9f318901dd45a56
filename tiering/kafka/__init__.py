"""The broker's on-disk world: log-dir layout, checkpoints, record batches, index files."""
