"""Prometheus counters of the bridge, served at /metrics."""

from prometheus_client import Counter, Gauge, Histogram

received = Counter("carweb_messages_received", "MQTT messages received from the broker")
stored = Counter("carweb_messages_stored", "Messages written to MongoDB")
duplicates = Counter("carweb_messages_duplicate", "Redelivered messages skipped as duplicates")
dropped = Counter("carweb_messages_dropped", "Messages not stored", ["reason"])
truncated = Counter("carweb_messages_truncated", "Payloads stored cut to MQTT_MAX_PAYLOAD")
batches = Counter("carweb_ingest_batches", "Batches written by the ingest writer")
write_retries = Counter("carweb_ingest_write_retries", "Batch writes retried after a database error")
reconnects = Counter("carweb_mqtt_reconnects", "Connections to the broker after the first")
bridge_restarts = Counter("carweb_bridge_restarts", "Times the supervisor restarted the bridge")
queue_depth = Gauge("carweb_ingest_queue_depth", "Messages received but not yet stored")
stored_raw = Counter(
    "carweb_messages_stored_raw", "Messages stored as raw bytes because their decoded form was refused"
)
held_bytes = Gauge(
    "carweb_ingest_held_bytes", "Estimated bytes of messages received but not yet acknowledged"
)
chunk_requests_refused = Counter(
    "carweb_chunk_requests_refused",
    "Firmware chunk requests refused (malformed, no open job, repeated, past the end)",
)
stage_seconds = Histogram(
    "carweb_ingest_stage_seconds",
    "Seconds a batch spent in each step of the bridge: waiting in the queue (its oldest message), "
    "numbering, writing, and finishing (counting, live pages, handlers, acks)",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
devices_unflushed = Gauge("carweb_devices_unflushed", "Devices whose counters the bridge has not yet written")
live_seconds = Histogram(
    "carweb_ingest_live_seconds",
    "Seconds from a message's arrival at the bridge until it is stored and sent to the live pages",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5),
)
series_refused = Counter(
    "carweb_telemetry_series_refused",
    "Numbers not rolled up because their minute already held the most series a minute keeps",
)
rollups_unwritten = Gauge("carweb_telemetry_minutes_unwritten", "Device minutes of rollups not yet written")
