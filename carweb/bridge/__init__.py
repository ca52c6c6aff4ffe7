"""The MQTT bridge: broker -> MongoDB -> Socket.IO."""
