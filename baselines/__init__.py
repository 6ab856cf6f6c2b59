"""Stream analytics: ingest telemetry from RabbitMQ, learn week-seasonal latency baselines,
flag real deviations with their context, forward them to the service."""
