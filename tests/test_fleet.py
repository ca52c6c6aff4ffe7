"""The device list at 10,000 devices: pages by place, each exact and reading a bounded number of devices."""

import re
from datetime import UTC, datetime, timedelta

from carweb.fleet import PAGE_READS, SEARCH_READS, device_page
from carweb.models import Device
from carweb.models.state import INGEST, IngestState
from tests.db_support import documents_examined

T0 = datetime(2026, 11, 1, tzinfo=UTC)
FLEET = 10_000
PAGE = 50


def seed_fleet(count=FLEET, vacated_every=3):
    """`count` devices in places 1, 2, 3..., every `vacated_every`-th place left empty (as after moves)."""
    docs, place = [], 0
    for n in range(count):
        place += 2 if vacated_every and n % vacated_every == 0 else 1
        docs.append(
            {
                "device_id": f"car-{n:05d}",
                "name": "Delivery van" if n % 1000 == 7 else None,
                "seen_seq": place,
                "last_seen_at": T0 + timedelta(seconds=n),
                "message_count": 1,
                "last_seq": 1,
                "online": True,
            }
        )
    for first in range(0, count, 2000):
        Device._get_collection().insert_many(docs[first : first + 2000])
    IngestState._get_collection().update_one({"_id": INGEST}, {"$set": {"seen_seq": place + 25}}, upsert=True)
    return [d["device_id"] for d in reversed(docs)]  # most recently seen first


def test_walking_every_page_of_ten_thousand_devices_reads_a_bounded_number_each(app):
    """Each page is the next fifty by place, every device once, each page reading at most four pages' worth."""
    expected = seed_fleet()
    seen, before, worst = [], None, 0
    while True:
        page, examined = documents_examined(lambda b=before: device_page(before=b, limit=PAGE))
        worst = max(worst, examined)
        seen += [d["device_id"] for d in page.devices]
        if page.older is None:
            break
        before = page.older
    assert seen == expected
    assert worst <= PAGE * PAGE_READS + 1


def test_search_reads_a_bounded_number_of_devices_and_offers_to_look_further(app):
    """A search looks through SEARCH_READS devices per request, most recently seen first."""
    seed_fleet()
    page, examined = documents_examined(lambda: device_page(limit=PAGE, search="VAN"))
    assert examined <= SEARCH_READS + 1
    assert [d["device_id"] for d in page.devices] == []  # "Delivery van" devices are older than 500
    further = device_page(before=page.searched_to, limit=PAGE, search="van")
    assert further.searched_to is not None and further.searched_to < page.searched_to
    found, before = [], None
    while True:
        page = device_page(before=before, limit=PAGE, search="van")
        found += [d["device_id"] for d in page.devices]
        before = page.older or page.searched_to
        if before is None:
            break
    assert found == [f"car-{n:05d}" for n in range(FLEET - 1, -1, -1) if n % 1000 == 7]


def test_an_exact_device_id_is_found_wherever_it_is(app):
    """Pasting a whole id finds the device in one request, however long ago it spoke."""
    seed_fleet(count=2000)
    page = device_page(limit=PAGE, search="car-00003")
    assert [d["device_id"] for d in page.devices] == ["car-00003"]


def test_device_list_pages_through_the_app_by_cursor(client, auth, app):
    """/devices and its Older links: fifty rows a page, no page number, each device once."""
    seed_fleet(count=260)
    auth.login()
    rows, link = [], "/devices"
    while link:
        html = client.get(link).get_data(as_text=True)
        rows += re.findall(r'<tr data-device-id="([^"]+)"', html)
        match = re.search(r'id="older-devices" href="([^"]+)"', html)
        link = match and match[1].replace("&amp;", "&")
    assert rows == [f"car-{n:05d}" for n in range(259, -1, -1)]
