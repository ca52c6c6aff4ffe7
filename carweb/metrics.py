"""Prometheus counters of the bridge, served at /metrics."""

from prometheus_client import Counter, Gauge

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
