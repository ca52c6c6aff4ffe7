"""The device list, most recently seen first, by pages that each read a bounded number of devices.

Each device holds a place in the list (`seen_seq`): the bridge hands out the next places
to the devices that spoke since its last flush. No two devices hold the same place, so a
range of places holds at most as many devices as it is wide, and a page is a walk down
ranges of places (`ranges.walk_down`) instead of a skip over a sort of every device.
"""

from dataclasses import dataclass, field

from carweb.bridge.flush import reserve_places
from carweb.bridge.topics import check_device_id
from carweb.models import Device, IngestState
from carweb.models.state import INGEST
from carweb.models.user import utcnow
from carweb.ranges import walk_down

PAGE_READS = 4  # pages' worth of devices one page may read
SEARCH_READS = 500  # devices one search request may look through


@dataclass
class FleetPage:
    """Devices of one page, the cursor of the next page, and how far a search looked."""

    devices: list = field(default_factory=list)
    older: int | None = None
    searched_to: int | None = None
    reads: int = 0


def top_place():
    """The highest place handed out so far (0 before any device spoke)."""
    state = IngestState._get_collection().find_one({"_id": INGEST}, {"seen_seq": 1}) or {}
    return state.get("seen_seq") or 0


def read_places(low, high):
    """Devices whose place is in (low, high], most recently seen first."""
    query = {"seen_seq": {"$gt": low, "$lte": high}}
    return list(Device._get_collection().find(query, sort=[("seen_seq", -1)]))


def device_page(before=None, limit=50, search=None):
    """One page of the device list below place `before` (the top when None), optionally searched."""
    top = top_place() if before is None else before - 1
    keep = _matcher(search) if search else None
    reads = SEARCH_READS if search else limit * PAGE_READS
    found, lowest, read = walk_down(read_places, top, limit + 1, reads, keep)
    page = FleetPage(devices=found[:limit], reads=read)
    if search and before is None:
        page.devices = _exact(search, page.devices)
    if len(found) > limit:
        page.older = found[limit - 1]["seen_seq"]
    elif lowest > 0:
        page.searched_to = lowest + 1
    return page


def register_device(device_id):
    """Add a device before it first speaks (for device tokens, rollouts); ValueError when the id is unusable or taken.

    It takes the next place at the top of the device list, as a device that just spoke.
    """
    check_device_id(device_id)  # a TopicError, a ValueError, says what is wrong
    if Device.objects(device_id=device_id).first() is not None:
        raise ValueError(f"device {device_id} exists")
    place = next(reserve_places(1))
    fields = {"created_at": utcnow(), "message_count": 0, "last_seq": 0, "online": False, "seen_seq": place}
    result = Device._get_collection().update_one(
        {"device_id": device_id}, {"$setOnInsert": fields}, upsert=True
    )
    if result.upserted_id is None:
        raise ValueError(f"device {device_id} exists")
    return Device.objects(device_id=device_id).first()


def _matcher(search):
    """Whether a device's id or name contains the search text, ignoring case."""
    needle = search.casefold()

    def keep(doc):
        return needle in doc["device_id"].casefold() or needle in (doc.get("name") or "").casefold()

    return keep


def _exact(search, devices):
    """A device whose id is exactly the search text comes first, wherever it is in the list."""
    exact = Device._get_collection().find_one({"device_id": search})
    if exact is None:
        return devices
    return [exact] + [d for d in devices if d["device_id"] != search]
