"""Configuration read from the environment (and `.env` in development)."""

import os
import socket
from datetime import timedelta
from pathlib import Path

from dotenv import load_dotenv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_PREFIX = "/api/v1"  # the JSON API: bearer tokens, JSON errors, CORS only here
SESSION_LIFETIME = timedelta(days=30)  # a login (its remember-me cookie too) lasts this long


def env_str(name, default=None):
    """Read a text environment variable; empty counts as unset (as in a copied .env.example)."""
    return os.environ.get(name) or default


def env_bool(name, default=False):
    """Read a yes/no environment variable."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def env_int(name, default):
    """Read an integer environment variable."""
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def data_dir(env=os.environ):
    """Where `make run` keeps its local database, broker data, secret key and chosen settings."""
    return Path(env.get("CARWEB_DATA_DIR") or os.path.join(ROOT, "var")).resolve()


def run_settings_path(env=os.environ):
    """The settings a running `make run` chose (addresses, secret key file), for commands in other shells."""
    return data_dir(env) / "run.env"


def secret_key():
    """SECRET_KEY, else the contents of the file CARWEB_SECRET_KEY_FILE names (as `make run` and Docker secrets keep it)."""
    path = env_str("CARWEB_SECRET_KEY_FILE")
    if env_str("SECRET_KEY") or not path:
        return env_str("SECRET_KEY")
    try:
        return Path(path).read_text().strip() or None
    except OSError as exc:
        raise RuntimeError(f"CARWEB_SECRET_KEY_FILE {path} cannot be read: {exc.strerror}") from exc


def default_public_url(env=os.environ):
    """Where gunicorn listens, as devices would reach it without a proxy in front."""
    return f"http://{env.get('CARWEB_HOST') or '127.0.0.1'}:{env.get('CARWEB_PORT') or 8000}"


class Config:
    """Settings for a deployed carweb; every value can be overridden by environment."""

    def __init__(self):
        load_dotenv(os.path.join(ROOT, ".env"))  # never overrides the real environment
        load_dotenv(run_settings_path())  # what a running `make run` chose, for its second shell
        self.SECRET_KEY = secret_key()
        self.MONGODB_URI = env_str("MONGODB_URI", "mongodb://127.0.0.1:27017/carweb")
        self.MQTT_URL = env_str("MQTT_URL", "mqtt://127.0.0.1:1883")
        self.MQTT_CLIENT_ID = env_str("MQTT_CLIENT_ID", f"carweb-{socket.gethostname()}")
        self.MQTT_PROTOCOL = env_str("MQTT_PROTOCOL", "5")
        # Several bridges split the stream with the shared subscription $share/<group>/+/#.
        self.MQTT_SHARED_GROUP = env_str("MQTT_SHARED_GROUP")
        self.MQTT_CA_FILE = env_str("MQTT_CA_FILE")
        self.MQTT_CERT_FILE = env_str("MQTT_CERT_FILE")
        self.MQTT_KEY_FILE = env_str("MQTT_KEY_FILE")
        self.MQTT_MAX_PAYLOAD = env_int("MQTT_MAX_PAYLOAD", 256 * 1024)
        # The largest MQTT packet the broker accepts from devices (the shipped Mosquitto's
        # max_packet_size); MQTT 5 bridges ask the broker for nothing much larger.
        self.MQTT_MAX_PACKET = env_int("MQTT_MAX_PACKET", 1024 * 1024)
        self.MQTT_KEEPALIVE = env_int("MQTT_KEEPALIVE", 30)
        self.MQTT_SESSION_EXPIRY = env_int("MQTT_SESSION_EXPIRY", 7 * 24 * 3600)
        self.MQTT_RECEIVE_MAXIMUM = env_int("MQTT_RECEIVE_MAXIMUM", 10000)
        self.MONGODB_TIMEOUT_MS = env_int("MONGODB_TIMEOUT_MS", 5000)
        self.CARWEB_BRIDGE = env_str("CARWEB_BRIDGE", "embedded")
        self.CARWEB_BATCH_MAX = env_int("CARWEB_BATCH_MAX", 1000)
        self.CARWEB_QUEUE_MAX = env_int("CARWEB_QUEUE_MAX", 10000)
        self.CARWEB_QUEUE_BYTES = env_int("CARWEB_QUEUE_BYTES", 64 * 1024 * 1024)
        self.CARWEB_PAGE_SIZE = env_int("CARWEB_PAGE_SIZE", 50)
        self.CARWEB_METRICS_TOKEN = env_str("CARWEB_METRICS_TOKEN")
        self.CARWEB_PUBLIC_URL = env_str("CARWEB_PUBLIC_URL", default_public_url()).rstrip("/")
        self.CARWEB_DOWNLOAD_TTL = env_int("CARWEB_DOWNLOAD_TTL", 3600)
        self.CARWEB_MAX_FIRMWARE_MB = env_int("CARWEB_MAX_FIRMWARE_MB", 64)
        # A file of trusted Ed25519 public keys: when set, only images signed by one are accepted.
        self.CARWEB_FIRMWARE_KEYS = env_str("CARWEB_FIRMWARE_KEYS")
        # Room for the form's other fields; the image itself is held to the exact limit.
        self.MAX_CONTENT_LENGTH = self.CARWEB_MAX_FIRMWARE_MB * 1024 * 1024 + 256 * 1024
        self.CARWEB_OTA_CHUNK_SIZE = env_int("CARWEB_OTA_CHUNK_SIZE", 64 * 1024)
        self.CARWEB_OTA_SWEEP_SECONDS = float(env_str("CARWEB_OTA_SWEEP_SECONDS", "10"))
        # Device WebSockets (/devices/ws): each connected device has an MQTT session of its
        # own on this broker URL (a user that may publish under every device id).
        self.CARWEB_WS_MQTT_URL = env_str("CARWEB_WS_MQTT_URL", self.MQTT_URL)
        self.CARWEB_WS_SESSION_EXPIRY = env_int("CARWEB_WS_SESSION_EXPIRY", self.MQTT_SESSION_EXPIRY)
        self.CARWEB_WS_MAX_FRAME = env_int("CARWEB_WS_MAX_FRAME", 1024 * 1024)
        self.CARWEB_WS_RATE = float(env_str("CARWEB_WS_RATE", "100"))
        self.CARWEB_WS_BURST = env_int("CARWEB_WS_BURST", 1000)
        self.CARWEB_WS_PING = env_int("CARWEB_WS_PING", 25)
        self.SOCKETIO_MESSAGE_QUEUE = env_str("SOCKETIO_MESSAGE_QUEUE")
        origins = env_str("SOCKETIO_ALLOWED_ORIGINS", "")
        self.SOCKETIO_ALLOWED_ORIGINS = [o.strip() for o in origins.split(",") if o.strip()] or None
        self.REDIS_URL = env_str("REDIS_URL")
        # Origins whose scripts may call the JSON API from a browser (CORS), comma-separated.
        self.CARWEB_CORS_ORIGINS = [
            o.strip() for o in env_str("CARWEB_CORS_ORIGINS", "").split(",") if o.strip()
        ]
        # Proxies in front whose X-Forwarded-For/-Proto/-Host to believe (1 behind the shipped nginx).
        self.CARWEB_PROXY_HOPS = env_int("CARWEB_PROXY_HOPS", 0)
        # Failed logins allowed per window (Flask-Limiter syntax), per account and per address.
        self.CARWEB_LOGIN_LIMIT_ACCOUNT = env_str("CARWEB_LOGIN_LIMIT_ACCOUNT", "10 per 15 minutes")
        self.CARWEB_LOGIN_LIMIT_ADDRESS = env_str("CARWEB_LOGIN_LIMIT_ADDRESS", "50 per 15 minutes")
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.SESSION_COOKIE_SECURE = env_bool("CARWEB_SECURE_COOKIES")
        self.REMEMBER_COOKIE_HTTPONLY = True
        self.REMEMBER_COOKIE_DURATION = SESSION_LIFETIME
        self.REMEMBER_COOKIE_SAMESITE = "Lax"
        self.REMEMBER_COOKIE_SECURE = self.SESSION_COOKIE_SECURE
        self.WTF_CSRF_TIME_LIMIT = None
        self.TESTING = False


class TestConfig(Config):
    """Settings for the Flask test client: no bridge and a fixed secret."""

    def __init__(self, **overrides):
        super().__init__()
        self.TESTING = True
        self.SECRET_KEY = "test-secret-key"
        self.CARWEB_BRIDGE = "off"
        self.__dict__.update(overrides)
