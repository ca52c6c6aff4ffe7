"""The firmware store: images stream into GridFS with their SHA-256, and are read back a chunk at a time."""

import base64
import hashlib
import io

from gridfs import GridFSBucket
from mongoengine.connection import get_db
from mongoengine.errors import NotUniqueError

from carweb.models import Firmware, Rollout, UpdateJob
from carweb.models.firmware import UNFINISHED_STATES
from carweb.ota.signing import SignatureError, load_public_keys, parse_signature, verify

READ_SIZE = 1024 * 1024


class FirmwareError(ValueError):
    """An image or a request about one that the store refuses; the message says why."""


class FirmwareTooLarge(FirmwareError):
    """An image over the configured size limit."""


def _bucket():
    """GridFS on carweb's database (collections fs.files and fs.chunks)."""
    return GridFSBucket(get_db())


def max_image_bytes(config):
    """The largest image carweb stores, from CARWEB_MAX_FIRMWARE_MB."""
    return config["CARWEB_MAX_FIRMWARE_MB"] * 1024 * 1024


def trusted_keys(config):
    """The public keys images must be signed with (CARWEB_FIRMWARE_KEYS, read on each upload), or None."""
    path = config.get("CARWEB_FIRMWARE_KEYS")
    if not path:
        return None
    try:
        return load_public_keys(path)
    except SignatureError as exc:
        raise FirmwareError(str(exc)) from exc


def store_firmware(
    stream, title, version, notes=None, created_by=None, max_bytes=None, signature=None, keys=None
):
    """Stream an image into GridFS, hashing it on the way; return the stored Firmware.

    Reads `stream` in blocks, so an image is never held whole in memory. Refuses an empty
    image, one over `max_bytes`, and a title + version that already exists. With trusted
    `keys` (CARWEB_FIRMWARE_KEYS), `signature` (a signature file's text) must verify for
    this image, title and version; without, a signature given is kept for devices to check.
    """
    title, version = title.strip(), version.strip()
    _check_fields(title, version, notes)
    if Firmware.objects(title=title, version=version).first() is not None:
        raise FirmwareError(f"{title} {version} already exists")
    signed = _parsed_signature(signature, keys)
    upload = _bucket().open_upload_stream(f"{title}-{version}", metadata={"title": title, "version": version})
    digest, size = hashlib.sha256(), 0
    try:
        while block := stream.read(READ_SIZE):
            size += len(block)
            if max_bytes is not None and size > max_bytes:
                raise FirmwareTooLarge(f"firmware images may be at most {max_bytes // (1024 * 1024)} MiB")
            digest.update(block)
            upload.write(block)
        if size == 0:
            raise FirmwareError("the file is empty")
        if keys is not None:
            _verified(keys, title, version, digest.hexdigest(), signed)
        upload.close()
    except BaseException:
        upload.abort()
        raise
    firmware = Firmware(
        title=title,
        version=version,
        size=size,
        sha256=digest.hexdigest(),
        file_id=upload._id,
        notes=notes or None,
        created_by=created_by,
        key_id=signed[0] if signed else None,
        signature=base64.b64encode(signed[1]).decode() if signed else None,
    )
    try:
        firmware.save(force_insert=True)
    except NotUniqueError as exc:
        _bucket().delete(upload._id)
        raise FirmwareError(f"{title} {version} already exists") from exc
    return firmware


def _parsed_signature(signature, keys):
    """(key id, signature bytes) of a signature file's text, or None; refused before any byte is stored."""
    if signature is None:
        if keys is not None:
            raise FirmwareError(
                "this carweb takes signed images only: add the signature file that "
                "`flask --app carweb firmware sign` makes for this image, title and version"
            )
        return None
    try:
        return parse_signature(signature)
    except SignatureError as exc:
        raise FirmwareError(str(exc)) from exc


def _verified(keys, title, version, sha256, signed):
    """Refuse an image whose signature does not verify against the trusted keys."""
    try:
        verify(keys, title, version, sha256, *signed)
    except SignatureError as exc:
        raise FirmwareError(str(exc)) from exc


def _check_fields(title, version, notes):
    """Title and version are required and short; notes fit the model."""
    for name, value in (("title", title), ("version", version), ("notes", notes or "")):
        limit = Firmware._fields[name].max_length
        if len(value) > limit:
            raise FirmwareError(f"the {name} may have at most {limit} characters")
    if not title or not version:
        raise FirmwareError("an image needs a title and a version")


def unfinished_jobs(firmware):
    """How many jobs of this firmware have not reached a terminal state."""
    return UpdateJob.objects(firmware_id=firmware.pk, state__in=UNFINISHED_STATES).count()


def delete_firmware(firmware):
    """Delete an image with its rollouts and their (finished) jobs; refused while a job is unfinished."""
    if unfinished_jobs(firmware):
        raise FirmwareError(f"{firmware.label} has unfinished update jobs; cancel its rollouts first")
    UpdateJob.objects(firmware_id=firmware.pk).delete()
    Rollout.objects(firmware_id=firmware.pk).delete()
    _bucket().delete(firmware.file_id)
    firmware.delete()


class GridFSChunkReader(io.RawIOBase):
    """A seekable binary file over one GridFS file that holds at most one chunk in memory.

    pymongo's GridOut reads through a cursor whose batches hold many chunks (up to 16 MiB
    on MongoDB) per open download; a fleet downloading at once must not cost that each.
    """

    def __init__(self, file_id):
        db = get_db()
        info = db["fs.files"].find_one({"_id": file_id}, {"length": 1, "chunkSize": 1})
        if info is None:
            raise FileNotFoundError(f"no GridFS file {file_id}")
        self._chunks = db["fs.chunks"]
        self._file_id = file_id
        self.length = info["length"]
        self._chunk_size = info["chunkSize"]
        self._position = 0
        self._cached = (None, b"")

    def readable(self):
        """Always readable."""
        return True

    def seekable(self):
        """Seeking is cheap: it only moves the position."""
        return True

    def tell(self):
        """The current position."""
        return self._position

    def seek(self, offset, whence=io.SEEK_SET):
        """Move to `offset` from the start, the current position or the end."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.length}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer):
        """Read from the chunk under the current position; 0 at the end."""
        if self._position >= self.length:
            return 0
        number, offset = divmod(self._position, self._chunk_size)
        data = self._chunk(number)[offset : offset + len(buffer)]
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def _chunk(self, number):
        """The bytes of chunk `number`, fetched once while the reader stays in it."""
        if self._cached[0] != number:
            doc = self._chunks.find_one({"files_id": self._file_id, "n": number}, {"data": 1})
            if doc is None:
                raise OSError(f"GridFS file {self._file_id} lacks chunk {number}")
            self._cached = (number, bytes(doc["data"]))
        return self._cached[1]


def open_firmware(firmware, buffer_size=64 * 1024):
    """A buffered, seekable reader of an image's bytes."""
    return io.BufferedReader(GridFSChunkReader(firmware.file_id), buffer_size)


def read_chunk(firmware, index, chunk_size):
    """Bytes [index * chunk_size, (index + 1) * chunk_size) of an image; empty past the end."""
    with open_firmware(firmware, buffer_size=chunk_size) as reader:
        reader.seek(index * chunk_size)
        return reader.read(chunk_size)
