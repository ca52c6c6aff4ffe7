"""Signed firmware (Ed25519): what a signature covers, key files, signing in the build pipeline, verifying.

A signature covers the image's SHA-256 digest together with its title and version, so a
valid signature cannot be replayed on another image or another version of the same one.
The server holds public keys only (CARWEB_FIRMWARE_KEYS); the private key stays where
images are built (`flask --app carweb firmware keygen` / `sign`).
"""

import base64
import binascii
import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DOMAIN = b"carweb-firmware-v1\n"  # a signature for carweb firmware and nothing else
MAX_SIGNATURE_FILE = 4096


class SignatureError(ValueError):
    """A signature, key or key file carweb refuses; the message says why (shown to operators as is)."""


def signed_bytes(title, version, sha256):
    """The exact bytes a firmware signature covers."""
    return DOMAIN + f"{title}\n{version}\n{sha256.lower()}".encode()


def key_id(public_key):
    """A public key's id: the first 16 hex digits of the SHA-256 of its 32 raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_line(public_key):
    """A key file line for `public_key`: `<key id> <base64 of its 32 raw bytes>`."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{key_id(public_key)} {base64.b64encode(raw).decode()}"


def generate_key():
    """A new signing key: (its PEM for the build machine, its public key line for CARWEB_FIRMWARE_KEYS)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, public_key_line(private.public_key())


def load_private_key(pem):
    """The Ed25519 private key of a PEM file's bytes."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the key is not an Ed25519 key")
    return key


def sign(private_key, title, version, sha256):
    """A detached signature as its file holds it (JSON text)."""
    signature = private_key.sign(signed_bytes(title, version, sha256))
    body = {"key_id": key_id(private_key.public_key()), "signature": base64.b64encode(signature).decode()}
    return json.dumps(body) + "\n"


def parse_signature(text):
    """(key id, signature bytes) of a signature file's text; SignatureError when it is not one."""
    try:
        data = json.loads(text)
        key, signature = data["key_id"], base64.b64decode(data["signature"], validate=True)
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise SignatureError("the signature file is not one `firmware sign` makes") from exc
    if not isinstance(key, str) or len(signature) != 64:
        raise SignatureError("the signature file is not one `firmware sign` makes")
    return key, signature


def parse_public_keys(text):
    """{key id: public key} of a key file: one `<key id> <base64 key>` per line, `#` comments."""
    keys = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            claimed, encoded = line.split()
            public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(encoded, validate=True))
        except (ValueError, binascii.Error) as exc:
            raise SignatureError(
                f"line {number} of the key file is not `<key id> <base64 Ed25519 key>`"
            ) from exc
        if claimed != key_id(public_key):
            raise SignatureError(f"line {number} of the key file: the key id does not belong to the key")
        keys[claimed] = public_key
    return keys


def load_public_keys(path):
    """The trusted keys of the file CARWEB_FIRMWARE_KEYS names."""
    try:
        with open(path, encoding="utf-8") as file:
            return parse_public_keys(file.read())
    except OSError as exc:
        raise SignatureError(f"CARWEB_FIRMWARE_KEYS {path} cannot be read: {exc.strerror}") from exc


def verify(keys, title, version, sha256, key, signature):
    """Check a signature of an image against trusted `keys`; SignatureError saying why it fails."""
    public_key = keys.get(key)
    if public_key is None:
        raise SignatureError(f"the image is signed with key {key}, which is not a trusted key")
    try:
        public_key.verify(signature, signed_bytes(title, version, sha256))
    except InvalidSignature as exc:
        raise SignatureError(
            f"the signature does not match this image as {title} {version} "
            "(signed for another file, title or version?)"
        ) from exc
