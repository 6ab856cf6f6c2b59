"""Turning message bodies into telemetry events, one module per wire format."""
