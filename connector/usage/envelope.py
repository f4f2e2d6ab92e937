"""The encrypted envelope a copy leaves the consumer's vault in, to one named recipient.

The recipient is named by its X.509 certificate, which must be issued by the data-space CA the
sending connector trusts (``recipient_from_certificate``); the envelope can be opened only with
that certificate's private key. Format (version 1), all integers big-endian::

    b"CONNECTOR-ENVELOPE/1\\n"            magic, 21 bytes
    uint32 N, then N bytes               the header: UTF-8 JSON, sorted keys, no whitespace
    uint32 S, then S bytes               the sender's signature of the header (S = 0: unsigned)
    records, each: uint32 L, L bytes     one AES-256-GCM ciphertext of a chunk (tag included)

The header says who may open it and what it holds::

    {"format": "connector-envelope/1", "enc": "A256GCM", "chunkSize": 65536,
     "alg": "ECDH-ES+P-256" | "ECDH-ES+X25519" | "RSA-OAEP-256",
     "epk": "<base64url ephemeral public key>"          (ECDH-ES)
     "wrappedKey": "<base64url RSA-OAEP-SHA256 of the content key>"   (RSA-OAEP-256)
     "recipient": {"certificateSha256": hex, "keySha256": hex (SHA-256 of its SPKI DER),
                   "participantId": "SKI:keyid:AKI", "name": CN},
     "plaintext": {"sha256": hex, "size": n},
     ... the sender's fields: "agreementId", "provider", "sender", "target", "created",
     "nextPolicy" (the policy third parties receive the data under, or null), ...}

Content key: for an EC P-256 recipient, ECDH with an ephemeral P-256 key; for an Ed25519
recipient (the data space's default participant key, which only signs), ECDH on the birational
X25519 form of the same key (as libsodium's ``crypto_sign_ed25519_pk_to_curve25519`` and age's
ssh-ed25519 recipients do); either way HKDF-SHA256 (salt: the ephemeral public key; info: the
format, the algorithm and the recipient key hash) gives the 256-bit key. For an RSA recipient the
key is random and wrapped with RSA-OAEP (SHA-256, MGF1-SHA-256).

The sender's signature is a JWT (typ ``envelope-header+jwt``, EdDSA or ES256) by the sending
connector's participant key, its certificate in ``x5c``, whose one claim ``headerSha256`` is the
SHA-256 of magic and header. As only the sender and the recipient can derive the content key,
and every chunk is bound to that hash, the signature vouches for the whole envelope: who sent
which data (the plaintext's hash is in the header) under which agreement, with which next
policy. A recipient given the data-space CA checks it and that it names the header's ``sender``.

Chunks (the STREAM construction): chunk i is sealed with the nonce ``i`` (11 bytes) followed by
one byte, 1 for the last chunk and 0 otherwise, and with the SHA-256 of magic and header as
associated data. So a changed header fails every chunk, a reordered, dropped or repeated chunk
fails its tag, a stream cut at a chunk boundary lacks its final chunk, and bytes after the final
chunk are refused; the plaintext's size and SHA-256 are checked at the end. A reader releases a
chunk only after its tag verified; a caller writing to a file keeps it only once the whole
stream verified.

The certificates of this data space carry ``digitalSignature`` only; using the key for key
agreement is what this format does with it, as age does with SSH signing keys.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from connector.identity.ca import CertificateError, common_name, participant_id
from connector.identity.keys import KeyFormatError, SigningKey, algorithm_of

MAGIC = b"CONNECTOR-ENVELOPE/1\n"
FORMAT = "connector-envelope/1"
ENC = "A256GCM"
ALG_P256 = "ECDH-ES+P-256"
ALG_X25519 = "ECDH-ES+X25519"
ALG_RSA = "RSA-OAEP-256"
CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_HEADER_BYTES = 4 * 1024 * 1024
MAX_SIGNATURE_BYTES = 64 * 1024
SIGNATURE_TYP = "envelope-header+jwt"
MIN_RSA_BITS = 2048
TAG = 16
_FIELDS = frozenset({"format", "enc", "alg", "chunkSize", "epk", "wrappedKey", "recipient", "plaintext"})

RecipientKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
RecipientPrivateKey = (
    ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | x25519.X25519PrivateKey
)


class EnvelopeError(ValueError):
    """An envelope cannot be made or opened: the reason says why (never a partial plaintext)."""


class RecipientRefused(EnvelopeError):
    """The recipient's certificate is not one this connector encrypts to."""


@dataclass(frozen=True)
class Recipient:
    """A recipient certified by the data-space CA, and how to encrypt to it."""

    certificate: x509.Certificate
    key: RecipientKey
    alg: str
    certificate_sha256: str
    key_sha256: str
    participant_id: str
    name: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "certificateSha256": self.certificate_sha256,
            "keySha256": self.key_sha256,
            "participantId": self.participant_id,
            "name": self.name,
        }


def _spki_sha256(key: RecipientKey | x25519.X25519PublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def load_certificate(pem: bytes | str) -> x509.Certificate:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificate(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise RecipientRefused(f"the recipient certificate is not a PEM X.509 certificate: {exc}") from exc


def recipient_from_certificate(
    cert: x509.Certificate, ca: x509.Certificate, now: datetime, *, role: str = "recipient"
) -> Recipient:
    """The recipient a certificate names, if the data-space CA issued it and it is valid now;
    RecipientRefused with the reason otherwise. (``role`` names it in the reasons.)"""
    if cert.issuer != ca.subject:
        raise RecipientRefused(
            f"the {role} certificate is not issued by this data space's CA "
            f"(issuer {cert.issuer.rfc4514_string()!r})"
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
        raise RecipientRefused(
            f"the {role} certificate is not issued by this data space's CA (its signature does not verify)"
        ) from exc
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise RecipientRefused(
            f"the {role} certificate is not valid now (valid "
            f"{cert.not_valid_before_utc.isoformat()} to "
            f"{cert.not_valid_after_utc.isoformat()})"
        )
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    except ValueError as exc:  # a malformed extension
        raise RecipientRefused(f"the {role} certificate is malformed: {exc}") from exc
    if is_ca:
        raise RecipientRefused(f"the {role} certificate is a CA certificate, not a participant's")
    try:
        pid = participant_id(cert)
        ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (CertificateError, x509.ExtensionNotFound, ValueError) as exc:
        raise RecipientRefused(f"the {role} certificate is not a participant certificate ({exc})") from exc
    if not pid.endswith(":keyid:" + ":".join(f"{b:02X}" for b in ca_ski)):
        raise RecipientRefused(f"the {role} certificate's authority key id is not the CA's")
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise RecipientRefused(f"the {role} certificate's key cannot be read: {exc}") from exc
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise RecipientRefused(f"the recipient key's curve {key.curve.name} is not P-256")
        alg = ALG_P256
    elif isinstance(key, ed25519.Ed25519PublicKey):
        alg = ALG_X25519
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise RecipientRefused(
                f"the recipient's RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed"
            )
        alg = ALG_RSA
    else:
        raise RecipientRefused(
            f"a {type(key).__name__} recipient key cannot receive an envelope (P-256, Ed25519 or RSA)"
        )
    der = cert.public_bytes(serialization.Encoding.DER)
    return Recipient(
        cert, key, alg, hashlib.sha256(der).hexdigest(), _spki_sha256(key), pid, common_name(cert.subject)
    )


# ------------------------------------------------------------------ Ed25519 -> X25519

_P = 2**255 - 19


def x25519_public_of(key: ed25519.Ed25519PublicKey) -> x25519.X25519PublicKey:
    """The Montgomery form u = (1 + y) / (1 - y) of an Edwards25519 public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _P or y == 1:
        raise RecipientRefused("the recipient's Ed25519 key has no X25519 form")
    u = (1 + y) * pow((1 - y) % _P, _P - 2, _P) % _P
    return x25519.X25519PublicKey.from_public_bytes(u.to_bytes(32, "little"))


def x25519_private_of(key: ed25519.Ed25519PrivateKey) -> x25519.X25519PrivateKey:
    """The X25519 scalar of an Ed25519 key: the first half of SHA-512 of its seed (clamped by
    X25519 itself)."""
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return x25519.X25519PrivateKey.from_private_bytes(hashlib.sha512(seed).digest()[:32])


# ------------------------------------------------------------------ keys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError(f"the envelope header's {what} is missing")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise EnvelopeError(f"the envelope header's {what} is not base64url") from exc


def _hkdf(shared: bytes, epk: bytes, alg: str, key_sha256: str) -> bytes:
    info = f"{FORMAT}|{alg}|{ENC}|{key_sha256}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk, info=info).derive(shared)


_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _content_key(recipient: Recipient) -> tuple[bytes, dict[str, str]]:
    """A fresh content key and the header fields that let the recipient derive it."""
    if isinstance(recipient.key, rsa.RSAPublicKey):
        cek = AESGCM.generate_key(bit_length=256)
        return cek, {"wrappedKey": _b64(recipient.key.encrypt(cek, _OAEP))}
    if isinstance(recipient.key, ec.EllipticCurvePublicKey):
        eph = ec.generate_private_key(ec.SECP256R1())
        shared = eph.exchange(ec.ECDH(), recipient.key)
        epk = eph.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    else:
        xeph = x25519.X25519PrivateKey.generate()
        shared = xeph.exchange(x25519_public_of(recipient.key))
        epk = xeph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _hkdf(shared, epk, recipient.alg, recipient.key_sha256), {"epk": _b64(epk)}


def _public_of(key: RecipientPrivateKey) -> RecipientKey | x25519.X25519PublicKey:
    return key.public_key()


def _open_key(header: Mapping[str, Any], key: RecipientPrivateKey) -> bytes:
    alg = header.get("alg")
    recipient = header.get("recipient") or {}
    wanted = recipient.get("keySha256") if isinstance(recipient, dict) else None
    if _spki_sha256(_public_of(key)) != wanted:
        raise EnvelopeError(
            "this envelope is for another key (recipient "
            f"{recipient.get('participantId') if isinstance(recipient, dict) else '?'}"
            ")"
        )
    try:
        if alg == ALG_RSA and isinstance(key, rsa.RSAPrivateKey):
            cek = key.decrypt(_unb64(header.get("wrappedKey"), "wrappedKey"), _OAEP)
            if len(cek) != 32:
                raise EnvelopeError("the wrapped content key is not 256 bits")
            return cek
        epk = _unb64(header.get("epk"), "epk")
        if alg == ALG_P256 and isinstance(key, ec.EllipticCurvePrivateKey):
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), epk)
            shared = key.exchange(ec.ECDH(), peer)
        elif alg == ALG_X25519 and isinstance(key, ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey):
            xkey = x25519_private_of(key) if isinstance(key, ed25519.Ed25519PrivateKey) else key
            shared = xkey.exchange(x25519.X25519PublicKey.from_public_bytes(epk))
        else:
            raise EnvelopeError(f"the envelope's algorithm {alg!r} does not fit a {type(key).__name__}")
    except ValueError as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError(f"the content key cannot be recovered: {exc}") from exc
    return _hkdf(shared, epk, str(alg), str(wanted))


def load_private_key(pem: bytes) -> RecipientPrivateKey:
    """A recipient's private key (PEM, unencrypted): P-256, Ed25519, X25519 or RSA."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise EnvelopeError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, RecipientPrivateKey):
        raise EnvelopeError(f"a {type(key).__name__} cannot open an envelope")
    return key


# ------------------------------------------------------------------ sealing


def _nonce(counter: int, final: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def _prefix(header: Mapping[str, Any]) -> tuple[bytes, bytes]:
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise EnvelopeError(f"the envelope header would be {len(raw)} bytes; at most {MAX_HEADER_BYTES}")
    prefix = MAGIC + struct.pack(">I", len(raw)) + raw
    return prefix, hashlib.sha256(MAGIC + raw).digest()


def _rechunk(source: Iterable[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """``source`` cut into ``size``-byte chunks, each with "is it the last"; at least one."""
    buffer = bytearray()
    pending: bytes | None = None
    for block in source:
        buffer += block
        while len(buffer) > size:  # keep one chunk back: only the end of input says "last"
            if pending is not None:
                yield pending, False
            pending = bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        if pending is not None:
            yield pending, False
        yield bytes(buffer), True
    else:
        yield (pending if pending is not None else b""), True


@dataclass(frozen=True)
class Sender:
    """The sending connector: its participant key and certificate sign the header."""

    key: SigningKey
    certificate: x509.Certificate

    def sign(self, header_sha256: bytes) -> bytes:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return jwt.encode(
            {"headerSha256": header_sha256.hex()},
            self.key.private_key,
            algorithm=self.key.alg,
            headers={"typ": SIGNATURE_TYP, "x5c": [base64.b64encode(der).decode()]},
        ).encode()


def seal(
    recipient: Recipient,
    source: Iterable[bytes],
    *,
    plaintext_sha256: str,
    plaintext_size: int,
    fields: Mapping[str, Any],
    sender: Sender | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[bytes]:
    """The envelope of ``source`` for ``recipient``, as it is produced: the prefix (magic,
    header and the ``sender``'s signature) first, then one record per chunk. ``fields``: the
    sender's header fields (not the format's own). The plaintext's SHA-256 and size go in the
    header and are checked here too: input that differs raises EnvelopeError before the final
    chunk is sealed."""
    clash = _FIELDS.intersection(fields)
    if clash:
        raise EnvelopeError(f"header fields {sorted(clash)} are the format's own")
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise EnvelopeError(f"chunk size must be 1 to {MAX_CHUNK_SIZE} bytes")
    cek, key_fields = _content_key(recipient)
    header = {
        **fields,
        "format": FORMAT,
        "enc": ENC,
        "alg": recipient.alg,
        "chunkSize": chunk_size,
        "recipient": recipient.to_json(),
        **key_fields,
        "plaintext": {"sha256": plaintext_sha256, "size": plaintext_size},
    }
    prefix, aad = _prefix(header)
    signature = sender.sign(aad) if sender is not None else b""
    yield prefix + struct.pack(">I", len(signature)) + signature
    aead = AESGCM(cek)
    digest = hashlib.sha256()
    size = 0
    for counter, (chunk, final) in enumerate(_rechunk(source, chunk_size)):
        digest.update(chunk)
        size += len(chunk)
        if final and (size != plaintext_size or digest.hexdigest() != plaintext_sha256):
            raise EnvelopeError(
                "the data is not the copy the header describes (size or "
                "SHA-256 differ); the envelope is incomplete"
            )
        sealed = aead.encrypt(_nonce(counter, final), chunk, aad)
        yield struct.pack(">I", len(sealed)) + sealed


def encrypt(
    plaintext: bytes,
    recipient: Recipient,
    fields: Mapping[str, Any],
    sender: Sender | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> bytes:
    """The whole envelope of ``plaintext`` (for small data and tests; ``seal`` streams)."""
    return b"".join(
        seal(
            recipient,
            [plaintext],
            plaintext_sha256=hashlib.sha256(plaintext).hexdigest(),
            plaintext_size=len(plaintext),
            fields=fields,
            sender=sender,
            chunk_size=chunk_size,
        )
    )


# ------------------------------------------------------------------ opening


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    data = bytearray()
    while len(data) < n:
        block = stream.read(n - len(data))
        if not block:
            raise EnvelopeError(f"the envelope is truncated (in {what})")
        data += block
    return bytes(data)


@dataclass(frozen=True)
class Head:
    """An envelope's header, the hash its chunks are bound to, and the sender's signature."""

    header: dict[str, Any]
    sha256: bytes
    signature: bytes


def read_header(stream: BinaryIO) -> Head:
    """The header, its hash and signature; EnvelopeError if it is no envelope."""
    if stream.read(len(MAGIC)) != MAGIC:
        raise EnvelopeError("not a connector envelope (magic differs)")
    (n,) = struct.unpack(">I", _read_exact(stream, 4, "the header length"))
    if n > MAX_HEADER_BYTES:
        raise EnvelopeError(f"the envelope header is {n} bytes; at most {MAX_HEADER_BYTES}")
    raw = _read_exact(stream, n, "the header")
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise EnvelopeError(f"the envelope header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("enc") != ENC:
        raise EnvelopeError(f"the envelope header is not {FORMAT} with {ENC}")
    chunk_size, plain = header.get("chunkSize"), header.get("plaintext")
    if type(chunk_size) is not int or not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise EnvelopeError("the envelope header's chunkSize is invalid")
    if not (
        isinstance(plain, dict)
        and isinstance(plain.get("sha256"), str)
        and type(plain.get("size")) is int
        and plain["size"] >= 0
    ):
        raise EnvelopeError("the envelope header's plaintext size and sha256 are invalid")
    (m,) = struct.unpack(">I", _read_exact(stream, 4, "the signature length"))
    if m > MAX_SIGNATURE_BYTES:
        raise EnvelopeError(f"the envelope's signature is {m} bytes; at most {MAX_SIGNATURE_BYTES}")
    return Head(header, hashlib.sha256(MAGIC + raw).digest(), _read_exact(stream, m, "the signature"))


def verify_sender(head: Head, ca: x509.Certificate, now: datetime) -> str:
    """The participant id of the sender whose signature of the header verifies, issued by the
    data-space CA and named as the header's ``sender``; EnvelopeError otherwise."""
    if not head.signature:
        raise EnvelopeError("the envelope is not signed by its sender")
    try:
        token = head.signature.decode("ascii")
        jws = jwt.get_unverified_header(token)
        chain = jws.get("x5c")
        if jws.get("typ") != SIGNATURE_TYP or not isinstance(chain, list) or len(chain) != 1:
            raise EnvelopeError("the envelope's signature is not a header signature with x5c")
        cert = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except (UnicodeDecodeError, ValueError, jwt.PyJWTError) as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError(f"the envelope's signature is malformed: {exc}") from exc
    who = recipient_from_certificate(cert, ca, now, role="sender")
    try:
        alg = algorithm_of(cert.public_key())
        claims = jwt.decode(token, cert.public_key(), algorithms=[alg])  # type: ignore[arg-type]
    except (KeyFormatError, jwt.PyJWTError) as exc:
        raise EnvelopeError(f"the sender's signature does not verify: {exc}") from exc
    if claims.get("headerSha256") != head.sha256.hex():
        raise EnvelopeError("the sender's signature is of another header")
    if who.participant_id != head.header.get("sender"):
        raise EnvelopeError(
            f"the envelope is signed by {who.participant_id}, not by its sender {head.header.get('sender')}"
        )
    return who.participant_id


@dataclass(frozen=True)
class Opened:
    """An envelope being opened: its header, the verified sender (None: not checked), and the
    plaintext as verified chunks."""

    header: dict[str, Any]
    sender: str | None
    chunks: Iterator[bytes]


def open_envelope(
    stream: BinaryIO,
    key: RecipientPrivateKey,
    *,
    ca: x509.Certificate | None = None,
    now: datetime | None = None,
) -> Opened:
    """Open an envelope with the recipient's key; with the data-space ``ca``, its sender's
    signature must verify too. The chunks' iterator raises EnvelopeError on any tampering,
    truncation, reordering or trailing data; the plaintext is complete and correct only when
    it ended without raising."""
    head = read_header(stream)
    header, aad = head.header, head.sha256
    sender = None
    if ca is not None:
        sender = verify_sender(head, ca, now or datetime.now(UTC))
    aead = AESGCM(_open_key(header, key))
    chunk_size = header["chunkSize"]
    expected = header["plaintext"]

    def chunks() -> Iterator[bytes]:
        digest = hashlib.sha256()
        size = 0
        counter = 0
        while True:
            length = stream.read(4)
            if not length:
                raise EnvelopeError("the envelope is truncated: its final chunk is missing")
            (n,) = struct.unpack(">I", length + _read_exact(stream, 4 - len(length), "a chunk length"))
            if not TAG <= n <= chunk_size + TAG:
                raise EnvelopeError(f"chunk {counter} has an invalid length {n}")
            sealed = _read_exact(stream, n, f"chunk {counter}")
            final = False
            try:
                chunk = aead.decrypt(_nonce(counter, False), sealed, aad)
            except InvalidTag:
                try:
                    chunk = aead.decrypt(_nonce(counter, True), sealed, aad)
                    final = True
                except InvalidTag:
                    raise EnvelopeError(
                        f"chunk {counter} does not verify (the header or the "
                        "data was changed, or chunks reordered)"
                    ) from None
            if not final and len(chunk) != chunk_size:
                raise EnvelopeError(f"chunk {counter} is not the last but is short")
            digest.update(chunk)
            size += len(chunk)
            counter += 1
            if final:
                if stream.read(1):
                    raise EnvelopeError("there is data after the envelope's final chunk")
                if size != expected["size"] or digest.hexdigest() != expected["sha256"]:
                    raise EnvelopeError("the plaintext's size or SHA-256 is not the header's")
                yield chunk
                return
            yield chunk

    return Opened(header, sender, chunks())


def decrypt(
    envelope: bytes,
    key: RecipientPrivateKey,
    *,
    ca: x509.Certificate | None = None,
    now: datetime | None = None,
) -> bytes:
    """The plaintext of a whole envelope, verified; EnvelopeError otherwise."""
    return b"".join(list(open_envelope(io.BytesIO(envelope), key, ca=ca, now=now).chunks))


__all__ = [
    "ALG_P256",
    "ALG_RSA",
    "ALG_X25519",
    "CHUNK_SIZE",
    "FORMAT",
    "MAGIC",
    "EnvelopeError",
    "Head",
    "Opened",
    "Recipient",
    "RecipientRefused",
    "Sender",
    "decrypt",
    "encrypt",
    "load_certificate",
    "load_private_key",
    "open_envelope",
    "read_header",
    "recipient_from_certificate",
    "seal",
    "verify_sender",
    "x25519_private_of",
    "x25519_public_of",
]
