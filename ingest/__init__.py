"""audit-ingest: Filebeat events from Redis, parsed, enriched and paired, into Elasticsearch."""

__version__ = "0.1.0"
