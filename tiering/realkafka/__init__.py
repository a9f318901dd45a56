"""A real Apache Kafka broker on demand: its jars fetched with Maven, one KRaft node run.

Used by the real-broker tests (tests/realkafka) and `tiering demo --real-kafka`; nothing here
is on the sidecar's own path.
"""
