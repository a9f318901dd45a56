"""tiering: a sidecar that gives Apache Kafka brokers tiered storage on S3-compatible stores."""

__version__ = "0.1.0"
