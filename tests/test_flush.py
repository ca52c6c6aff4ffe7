"""Device documents written behind the stream: places in the list, a deleted device, recovery after a crash."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from carweb.bridge.book import DeviceBook
from carweb.bridge.documents import build_documents
from carweb.bridge.flush import flush_devices, recover_unflushed
from carweb.bridge.ingest import prepare_batch, store_messages
from carweb.models import Device, Message
from tests.ingest_support import ingest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def batch(device_id, count, start=0):
    """`count` messages of one device, a second apart from `start`."""
    msgs = [
        (
            SimpleNamespace(topic=f"{device_id}/t", payload=str(n).encode(), qos=1, retain=False),
            T0 + timedelta(seconds=n),
        )
        for n in range(start, start + count)
    ]
    return build_documents(msgs, 1024)


def stored_but_not_flushed(book, docs):
    """What a bridge killed after storing and counting a batch, before its next flush, leaves behind."""
    book.record(store_messages(book, prepare_batch(book, docs)))


def test_a_crash_before_the_flush_is_recounted_at_the_next_start(app):
    """Messages stored after the checkpoint are counted into their devices when the bridge starts again."""
    recover_unflushed(DeviceBook())  # the first start sets the checkpoint
    ingest(batch("crash", 3))
    stored_but_not_flushed(DeviceBook(), batch("crash", 4, start=3))
    assert Device.objects.get(device_id="crash").message_count == 3
    restarted = DeviceBook()
    assert recover_unflushed(restarted) == 4
    device = Device.objects.get(device_id="crash")
    assert (device.message_count, device.last_seq) == (7, 7)
    assert device.last_seen_at == T0 + timedelta(seconds=6)
    assert recover_unflushed(DeviceBook()) == 0  # the checkpoint moved past them
    ingest(batch("crash", 1, start=7), restarted)
    assert [m.seq for m in Message.objects(device_id="crash").order_by("seq")] == list(range(1, 9))


def test_a_new_device_unflushed_at_the_crash_is_created_by_the_recovery(app):
    """The device's document did not exist yet: the recovery makes it, with its first message's time."""
    recover_unflushed(DeviceBook())
    stored_but_not_flushed(DeviceBook(), batch("fresh", 2))
    assert not Device.objects(device_id="fresh")
    recover_unflushed(DeviceBook())
    device = Device.objects.get(device_id="fresh")
    assert (device.message_count, device.created_at, device.seen_seq is not None) == (2, T0, True)


def test_devices_that_spoke_later_get_higher_places(app):
    """Each flush hands the next places to the devices that spoke since, the last one highest."""
    book = DeviceBook()
    ingest(batch("first", 1) + batch("second", 1, start=5), book)
    ingest(batch("first", 1, start=9), book)
    places = {d.device_id: d.seen_seq for d in Device.objects}
    assert places["first"] > places["second"]


def test_a_device_deleted_while_it_sends_comes_back_with_only_its_new_messages(app):
    """The book still knew the device; its document is made again and counts what came after."""
    book = DeviceBook()
    ingest(batch("phoenix", 5), book)
    Message.objects(device_id="phoenix").delete()
    Device.objects(device_id="phoenix").delete()
    ingest(batch("phoenix", 1, start=100), book)
    device = Device.objects.get(device_id="phoenix")
    assert device.message_count == 1 and device.created_at == T0 + timedelta(seconds=100)
    assert Message.objects.get(device_id="phoenix").seq == 6  # numbers never go back


def test_flushing_with_nothing_changed_writes_nothing(app):
    """An idle bridge costs the database nothing."""
    book = DeviceBook()
    ingest(batch("idle", 1), book)
    assert flush_devices(book) == 0
