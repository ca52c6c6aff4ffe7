"""Schemathesis against the OpenAPI document: no request it makes gets a 5xx or a response the document does not describe."""

import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import mongoengine

from carweb.models import ApiToken, User
from carweb.ota.rollouts import create_rollout
from carweb.ota.store import store_firmware
from tests.conftest import PASSWORD
from tests.ingest_support import store_as_bridge
from tests.test_api import PAYLOADS

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def test_every_operation_answers_as_its_document_says(app, web_server, tmp_path):
    """Valid and invalid requests alike, as the schemathesis CLI makes them: never a 5xx, every answer documented."""
    for n in range(60):
        store_as_bridge(f"car-{n % 3}/telemetry", PAYLOADS[n % len(PAYLOADS)], T0 + timedelta(seconds=n))
    firmware = store_firmware(io.BytesIO(b"\x03" * 500), "ecu", "1.0")
    create_rollout(app, firmware, ["car-0", "car-1"], waves=[50, 100])
    admin = User.create_or_update("schema@example.com", PASSWORD, role="admin")
    token = ApiToken.create(admin, "schemathesis")[1]
    url, _, _ = web_server(mongoengine.get_db().name, CARWEB_BRIDGE="off")
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "run", f"{url}/api/v1/openapi.json"),
        *("--checks", CHECKS, "--header", f"Authorization: Bearer {token}"),
        *("--max-examples", "25", "--seed", "8", "--workers", "2", "--no-color"),
        *("--generation-database", "none", "--report-dir", str(tmp_path)),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
