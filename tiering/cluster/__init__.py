"""Cluster mode: leadership from Kafka, the partition's remote chain, claims in the store."""
