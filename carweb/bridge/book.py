"""What the bridge knows of each device between flushes: sequence numbers, counters, online state.

The `messages` collection is the log; a device's document is a view of it that the bridge
writes behind the stream (see `ingest.flush_devices`). The book holds that view in memory:
it numbers each message of a device in arrival order (`seq`, the key of the device's
history pages), counts what was stored, and says which devices changed since the last
flush and since the last live update. Pure: no database, no Flask.
"""

import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from carweb.bridge.topics import is_status_topic

DEFAULT_CAPACITY = 100_000
# A device is forgotten only after this long without a message: far longer than a message
# takes from numbering to counting, so no message in flight ever loses its device's state.
IDLE_SECONDS = 120


@dataclass(slots=True)
class DeviceState:
    """One device as the book knows it; `recorded_seq` and `message_count` always agree."""

    device_id: str
    next_seq: int = 0  # the last number given to a message of this device
    recorded_seq: int = 0  # the highest number among its stored messages counted here
    message_count: int = 0  # inbound messages stored
    last_seen_at: object = None  # newest inbound message
    last_at: object = None  # newest message either way (received_at never goes back)
    created_at: object = None
    online: bool | None = None
    in_db: bool = False  # a device document exists (loaded, or written by a flush)
    seen_changed: bool = False  # a new inbound message since the last flush moves it up the list
    version: int = 0  # bumped on every change; a flush marks clean only what it wrote
    touched: float = 0.0  # when a message was last numbered (the book forgets idle devices only)


def state_from_document(doc):
    """The state of a device whose document was read from `devices`."""
    last_seq = doc.get("last_seq") or 0
    return DeviceState(
        device_id=doc["device_id"],
        next_seq=last_seq,
        recorded_seq=last_seq,
        message_count=doc.get("message_count") or 0,
        last_seen_at=doc.get("last_seen_at"),
        last_at=doc.get("last_seen_at"),
        created_at=doc.get("created_at"),
        online=doc.get("online"),
        in_db=True,
    )


class DeviceBook:
    """Per-device state of the bridge's process, least recently used first.

    Beyond `capacity` it forgets devices idle for IDLE_SECONDS whose state is written,
    so it holds at most the capacity or the devices active lately, whichever is more.
    """

    def __init__(self, capacity=DEFAULT_CAPACITY, clock=time.monotonic):
        self.capacity = capacity
        self.clock = clock
        self._states = OrderedDict()
        self._dirty = set()
        self._changed = set()
        self.recorded_through = None  # _id of the newest message recorded (the flush checkpoint)

    def __len__(self):
        return len(self._states)

    @property
    def unflushed(self):
        """How many devices have changes not yet written."""
        return len(self._dirty)

    def get(self, device_id):
        """The state of a device, or None when the book does not hold it."""
        return self._states.get(device_id)

    def unknown(self, device_ids):
        """Those of `device_ids` the book holds no state for."""
        return [device_id for device_id in dict.fromkeys(device_ids) if device_id not in self._states]

    def load(self, state):
        """Hold a device's state read from the database (or a new device's empty state)."""
        state.touched = self.clock()
        self._states[state.device_id] = state

    def number(self, docs):
        """Give each message the next `seq` of its device, in arrival order; the devices must be held.

        `received_at` is raised to the device's previous message's time if the clock went
        back, so a device's history is in the same order by number and by time.
        """
        now = self.clock()
        for doc in docs:
            state = self._states[doc["device_id"]]
            self._states.move_to_end(doc["device_id"])
            state.touched = now
            state.next_seq += 1
            doc["seq"] = state.next_seq
            if state.last_at is not None and doc["received_at"] < state.last_at:
                doc["received_at"] = state.last_at
            state.last_at = doc["received_at"]

    def skip_to(self, device_id, seq):
        """Number the device's next message above `seq` (numbers found taken in the database)."""
        state = self._states[device_id]
        state.next_seq = max(state.next_seq, seq)

    def record(self, docs, through=None):
        """Count stored messages into their devices' states (they must be held), each device's oldest first.

        `through` is the _id up to which every message received is now counted (or
        left out for good), the checkpoint a flush may move to; by default the last
        document's, for callers that record whole batches in arrival order.
        """
        for doc in docs:
            state = self._states.get(doc["device_id"])
            if state is None or doc.get("seq") is None:
                continue
            self._apply(state, doc)
            self._dirty.add(state.device_id)
            self._changed.add(state.device_id)
        through = through if through is not None else (docs[-1]["_id"] if docs else None)
        if through is not None and (self.recorded_through is None or through > self.recorded_through):
            self.recorded_through = through

    def _apply(self, state, doc):
        """One stored message's effect on its device."""
        state.version += 1
        state.recorded_seq = max(state.recorded_seq, doc["seq"])
        state.next_seq = max(state.next_seq, doc["seq"])
        if state.created_at is None:
            state.created_at = doc["received_at"]
        if doc["direction"] != "in":
            return
        state.message_count += 1
        state.seen_changed = True
        if state.last_seen_at is None or doc["received_at"] >= state.last_seen_at:
            state.last_seen_at = doc["received_at"]
        state.online = True
        if is_status_topic(doc["topic"]) and doc.get("text") in ("online", "offline"):
            state.online = doc["text"] == "online"

    def dirty(self):
        """Copies of the states changed since their last flush: new devices first, then least recently seen.

        New devices go first because their pages and links exist only once they are written.
        """
        states = [replace(self._states[device_id]) for device_id in self._dirty]
        return sorted(
            states, key=lambda s: (s.in_db, s.last_seen_at is None, s.last_seen_at or 0, s.device_id)
        )

    def flushed(self, written):
        """The copies in `written` are in the database: clean, unless they changed since."""
        for copy in written:
            state = self._states.get(copy.device_id)
            if state is None:
                continue
            state.in_db = True
            if state.version == copy.version:
                state.seen_changed = False
                self._dirty.discard(copy.device_id)
        self._evict()

    def take_changed(self):
        """States changed since the last call (for live updates of the pages)."""
        changed, self._changed = self._changed, set()
        return [self._states[d] for d in changed if d in self._states]

    def _evict(self):
        """Forget the least recently used idle, written states beyond the capacity."""
        excess = len(self._states) - self.capacity
        if excess <= 0:
            return
        victims, idle_before = [], self.clock() - IDLE_SECONDS
        for device_id, state in self._states.items():
            if len(victims) == excess or state.touched > idle_before:
                break  # the rest were used more recently still
            if device_id not in self._dirty:
                victims.append(device_id)
        for device_id in victims:
            del self._states[device_id]
            self._changed.discard(device_id)
