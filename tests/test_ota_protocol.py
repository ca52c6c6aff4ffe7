"""Payloads of the firmware protocol and the arithmetic of waves (pure functions)."""

import json
from types import SimpleNamespace

import pytest
from bson import ObjectId

from carweb.ota.protocol import ProtocolError, parse_chunk_request, parse_status_report, update_command
from carweb.ota.rollouts import RolloutError, check_settings, parse_waves, wave_ends, wave_of

JOB = str(ObjectId())


def test_status_report_keeps_only_what_the_device_sent():
    """Optional fields stay absent; error text is cut to 500 characters."""
    report = parse_status_report({"job": JOB, "state": "FAILED", "error": "x" * 900, "extra": 1})
    assert report.job == ObjectId(JOB) and report.error == "x" * 500
    assert report.as_dict() == {"job": JOB, "state": "FAILED", "error": "x" * 500}
    assert parse_status_report({"job": JOB, "state": "DOWNLOADING", "progress": 12.7}).progress == 12


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"state": "UPDATED"},
        {"job": "abc", "state": "UPDATED"},
        {"job": JOB, "state": "SENT"},
        {"job": JOB, "state": "updated"},
        {"job": JOB, "state": "DOWNLOADING", "progress": 101},
        {"job": JOB, "state": "DOWNLOADING", "progress": True},
        {"job": JOB, "state": "DOWNLOADING", "progress": "50"},
        {"job": JOB, "state": "UPDATED", "version": 2},
    ],
)
def test_malformed_status_reports_are_refused(data):
    """Anything but the contract's report is a ProtocolError (the message is still stored)."""
    with pytest.raises(ProtocolError):
        parse_status_report(data)


def test_chunk_requests_need_a_job_and_a_whole_index():
    """`{"job", "index"}` with index 0 or more."""
    assert parse_chunk_request({"job": JOB, "index": 3}) == (ObjectId(JOB), 3)
    for bad in ({"job": JOB}, {"job": JOB, "index": -1}, {"job": JOB, "index": 1.5}, {"index": 0}):
        with pytest.raises(ProtocolError):
            parse_chunk_request(bad)


def test_update_command_has_exactly_the_contract_fields():
    """job, title, version, size, sha256, url, expires, chunk_size."""
    firmware = SimpleNamespace(
        title="ecu", version="2.0", size=10, sha256="ab" * 32, signature=None, key_id=None
    )
    command = json.loads(update_command(ObjectId(JOB), firmware, "http://x/d/t", 1700000000.9, 4096))
    assert command == {
        "job": JOB,
        "title": "ecu",
        "version": "2.0",
        "size": 10,
        "sha256": "ab" * 32,
        "url": "http://x/d/t",
        "expires": 1700000000,
        "chunk_size": 4096,
    }


def test_a_signed_images_command_carries_its_signature_and_key_id():
    """signature and key_id join the contract's fields for a signed image only."""
    firmware = SimpleNamespace(
        title="ecu", version="2.0", size=10, sha256="ab" * 32, signature="c2ln", key_id="0123"
    )
    command = json.loads(update_command(ObjectId(JOB), firmware, "http://x/d/t", 1700000000.9, 4096))
    assert (command["signature"], command["key_id"]) == ("c2ln", "0123") and len(command) == 10


def test_waves_are_cumulative_ceilings():
    """20 devices at 10/50/100: 2, 8, 10; 1 device at 10/50/100: all in the first wave."""
    assert wave_ends(20, [10, 50, 100]) == [2, 10, 20]
    assert [wave_of(n, [2, 10, 20]) for n in (0, 1, 2, 9, 10, 19)] == [0, 0, 1, 1, 2, 2]
    assert wave_ends(1, [10, 50, 100]) == [1, 1, 1]
    assert wave_ends(3, [5, 25, 100]) == [1, 1, 3]


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "from 1 to 100"), ("0,100", "from 1 to 100"), ("50,50,100", "must increase"), ("10,a", "whole")],
)
def test_bad_waves_are_refused(text, message):
    """Percentages from 1 to 100, increasing, the last 100."""
    with pytest.raises(RolloutError, match=message):
        parse_waves(text)


def test_settings_are_bounded():
    """Threshold in (0, 1], retries 0..10, timeout at least a second."""
    check_settings(1, 0, 1)
    for bad in ((0, 2, 600), (1.5, 2, 600), (0.2, -1, 600), (0.2, 11, 600), (0.2, 2, 0)):
        with pytest.raises(RolloutError):
            check_settings(*bad)
