"""Object storage: the port, the S3 adapter, key layout and the manifest schema."""
