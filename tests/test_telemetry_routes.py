"""The telemetry of a device for pages and scripts: JSON and CSV, its arguments, who may read it."""

import csv
import io
from datetime import timedelta

import pytest

from carweb.models import Rollup
from tests.conftest import csrf_token
from tests.test_api import bearer, token_of
from tests.test_telemetry import NAMES, T0, assert_exact, car_messages, store_with_rollups

URL = "/devices/car/telemetry"
RANGE = {"since": "2026-11-02T22:00:00Z", "until": "2026-11-02T22:30:00Z"}


@pytest.fixture
def car(app):
    """A car that spoke every 5 s for half an hour."""
    pairs = car_messages("car", T0, 1800, 5)
    store_with_rollups(pairs)
    return pairs


def test_the_series_come_as_json_exact_and_as_a_csv_download(client, auth, car):
    auth.login(role="viewer", email="viewer@example.com")
    answer = client.get(URL, query_string={**RANGE, "series": NAMES, "points": 30})
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["device_id"], body["bucket_seconds"], body["source"]) == ("car", 60, "minutes")
    assert [s["name"] for s in body["series"]] == NAMES
    assert body["since"] == "2026-11-02T22:00:00.000Z" and len(body["series"][0]["points"]) == 30
    speed = body["series"][0]["points"]
    assert (
        speed[0][4] == 12 and speed[0][1] <= speed[0][3] <= speed[0][2]
    )  # 12 values a minute: min <= mean <= max
    download = client.get(URL, query_string={**RANGE, "series": NAMES[0], "points": 30, "format": "csv"})
    assert download.headers["Content-Disposition"] == 'attachment; filename="car-telemetry.csv"'
    rows = list(csv.reader(io.StringIO(download.get_data(as_text=True))))
    assert rows[0] == ["series", "time", "min", "max", "mean", "count"]
    assert rows[1][:2] == ["telemetry: speed", "2026-11-02T22:00:00.000Z"] and len(rows) == 31
    assert [float(v) for v in rows[1][2:]] == pytest.approx(speed[0][1:])


def test_without_series_the_recent_ones_come_and_without_a_range_the_whole_history(client, auth, car):
    auth.login()
    body = client.get(URL).get_json()
    assert sorted(s["name"] for s in body["series"]) == sorted(NAMES)
    assert sum(p[4] for p in body["series"][0]["points"]) == len(car)


@pytest.mark.parametrize(
    "query",
    [
        {"since": "2026-11-02T23:00:00Z", "until": "2026-11-02T22:00:00Z"},
        {"points": "0"},
        {"points": "100000"},
        {"since": "yesterday"},
        {"series": ["x"] * 17},
        {"format": "xml"},
    ],
)
def test_bad_arguments_are_refused_with_the_field_that_is_wrong(client, auth, car, query):
    auth.login()
    page = client.get(URL, query_string=query)
    assert page.status_code == 400 and page.get_json()["errors"]
    api = client.get(f"/api/v1{URL}", query_string=query)
    assert api.status_code == 422 and api.get_json()["errors"]


def test_scripts_read_it_under_the_api_with_a_token_and_strangers_get_nothing(client, car):
    secret = token_of("viewer")
    answer = client.get(f"/api/v1{URL}", query_string={**RANGE, "series": NAMES}, headers=bearer(secret))
    assert answer.status_code == 200
    assert_exact(_as_chart(answer.get_json()), car)
    assert client.get(f"/api/v1{URL}").status_code == 401
    assert client.get(URL).status_code in (302, 401)
    assert client.get("/api/v1/devices/nobody/telemetry", headers=bearer(secret)).status_code == 404


def test_the_page_lists_the_series_and_deleting_the_device_deletes_its_rollups(client, auth, car):
    auth.login()
    html = client.get("/devices/car").get_data(as_text=True)
    assert 'value="telemetry: engine.temp"' in html and 'id="telemetry"' in html
    assert "uPlot.iife.min.js" in html
    confirm = client.get("/devices/car/delete").get_data(as_text=True)
    client.post("/devices/car/delete", data={"csrf_token": csrf_token(confirm)})
    assert Rollup.objects(device_id="car").count() == 0


def _as_chart(body):
    """A JSON answer in the shape `assert_exact` reads."""
    from datetime import datetime
    from types import SimpleNamespace

    def parse(text):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return SimpleNamespace(
        since=parse(body["since"]),
        until=parse(body["until"]),
        bucket_seconds=body["bucket_seconds"],
        series=body["series"],
    )


def test_a_range_in_the_future_or_before_the_device_is_empty_not_an_error(client, auth, car):
    auth.login()
    later = {"since": (T0 + timedelta(days=30)).isoformat(), "until": (T0 + timedelta(days=31)).isoformat()}
    body = client.get(URL, query_string={**later, "series": NAMES}).get_json()
    assert [s["points"] for s in body["series"]] == [[], [], []]
