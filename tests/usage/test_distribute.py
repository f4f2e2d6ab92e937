"""Distribution of a consumer's copy: the agreement's terms, and the envelope a copy leaves in."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from connector.consumer import agreement_duties
from connector.identity.ca import CertificateAuthority, create_csr, participant_id
from connector.identity.keys import SigningKey
from connector.odrl import terms as T
from connector.odrl.parse import load_policy
from connector.odrl.templates import fill
from connector.usage import envelope as E
from connector.usage.distribute import decide, distribution_terms

# certificates are issued as of the collection, however late the suite reaches this module
NOW = dt.datetime.now(dt.UTC)
ISSUED = NOW.timestamp() - 3600
DATA = bytes(range(256)) * 1000 + b"tail"  # 256,004 bytes: several chunks and a short last one
FIELDS = {"agreementId": "urn:agreement:1", "provider": "AA:keyid:BB"}


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(ec.generate_private_key(ec.SECP256R1()), "Test", now=ISSUED)


def participant(
    ca: CertificateAuthority,
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    name: str = "recipient",
) -> x509.Certificate:
    return ca.sign_csr(create_csr(key, name), now=ISSUED)


def rsa_certificate(ca: CertificateAuthority, key: rsa.RSAPrivateKey) -> x509.Certificate:
    """An RSA participant certificate (this data space's CA issues none; another CA's tooling
    could, and the envelope accepts it when it chains to the CA)."""
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa recipient")]))
        .issuer_name(ca.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                x509.SubjectKeyIdentifier(ca.key_identifier)
            ),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def ec_pair(ca: CertificateAuthority) -> tuple[ec.EllipticCurvePrivateKey, E.Recipient]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, E.recipient_from_certificate(participant(ca, key), ca.certificate, NOW)


@pytest.fixture(scope="module")
def rsa_pair(ca: CertificateAuthority) -> tuple[rsa.RSAPrivateKey, E.Recipient]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, E.recipient_from_certificate(rsa_certificate(ca, key), ca.certificate, NOW)


@pytest.fixture(scope="module")
def ed_pair(ca: CertificateAuthority) -> tuple[ed25519.Ed25519PrivateKey, E.Recipient]:
    key = ed25519.Ed25519PrivateKey.generate()
    return key, E.recipient_from_certificate(participant(ca, key), ca.certificate, NOW)


# ------------------------------------------------------------------ the envelope


@pytest.mark.parametrize("pair", ["ec_pair", "rsa_pair", "ed_pair"])
def test_the_recipient_key_opens_the_envelope(pair: str, request: pytest.FixtureRequest) -> None:
    key, recipient = request.getfixturevalue(pair)
    env = E.encrypt(DATA, recipient, FIELDS)
    assert DATA not in env and DATA[:4096] not in env
    assert E.decrypt(env, key) == DATA
    header = E.read_header(io.BytesIO(env)).header
    assert header["alg"] == recipient.alg
    assert (
        header["recipient"]["certificateSha256"]
        == hashlib.sha256(recipient.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    )
    assert header["plaintext"] == {"sha256": hashlib.sha256(DATA).hexdigest(), "size": len(DATA)}
    assert header["agreementId"] == "urn:agreement:1"


def test_empty_data_and_exact_chunks_round_trip(
    ec_pair: tuple[ec.EllipticCurvePrivateKey, E.Recipient],
) -> None:
    key, recipient = ec_pair
    for data in (b"", b"x" * 64, b"y" * 128):
        assert E.decrypt(E.encrypt(data, recipient, FIELDS, chunk_size=64), key) == data


def test_another_key_cannot_open_it(
    ec_pair: tuple[ec.EllipticCurvePrivateKey, E.Recipient], rsa_pair: tuple[rsa.RSAPrivateKey, E.Recipient]
) -> None:
    env = E.encrypt(DATA, ec_pair[1], FIELDS)
    for wrong in (ec.generate_private_key(ec.SECP256R1()), rsa_pair[0], ed25519.Ed25519PrivateKey.generate()):
        with pytest.raises(E.EnvelopeError, match="for another key"):
            E.decrypt(env, wrong)


def _parts(env: bytes) -> tuple[bytes, dict[str, object], list[bytes]]:
    """prefix (magic, header, signature), header, records (each with its length field)."""
    n = struct.unpack(">I", env[len(E.MAGIC) : len(E.MAGIC) + 4])[0]
    end = len(E.MAGIC) + 4 + n
    header = json.loads(env[len(E.MAGIC) + 4 : end])
    end += 4 + struct.unpack(">I", env[end : end + 4])[0]
    records, i = [], end
    while i < len(env):
        m = struct.unpack(">I", env[i : i + 4])[0]
        records.append(env[i : i + 4 + m])
        i += 4 + m
    return env[:end], header, records


def _with_header(header: dict[str, object], records: list[bytes], signature: bytes = b"") -> bytes:
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return (
        E.MAGIC
        + struct.pack(">I", len(raw))
        + raw
        + struct.pack(">I", len(signature))
        + signature
        + b"".join(records)
    )


def test_a_changed_header_is_detected(ec_pair: tuple[ec.EllipticCurvePrivateKey, E.Recipient]) -> None:
    key, recipient = ec_pair
    _, header, records = _parts(E.encrypt(DATA, recipient, {**FIELDS, "nextPolicy": None}))
    for change in (
        {"agreementId": "urn:agreement:other"},
        {"nextPolicy": {"@id": "https://evil.example/anything-goes"}},
    ):
        with pytest.raises(E.EnvelopeError, match="chunk 0 does not verify"):
            E.decrypt(_with_header({**header, **change}, records), key)
    # the plaintext's claimed hash: every chunk fails first (the header is authenticated)
    forged = {**header, "plaintext": {"sha256": "0" * 64, "size": len(DATA)}}
    with pytest.raises(E.EnvelopeError, match="does not verify"):
        E.decrypt(_with_header(forged, records), key)


def test_changed_reordered_or_truncated_ciphertext_is_detected(
    rsa_pair: tuple[rsa.RSAPrivateKey, E.Recipient],
) -> None:
    key, recipient = rsa_pair
    env = E.encrypt(DATA, recipient, FIELDS)
    prefix, _, records = _parts(env)
    assert len(records) == 4
    flipped = bytearray(env)
    flipped[len(prefix) + 100] ^= 1
    cases = {
        "a flipped bit": bytes(flipped),
        "reordered chunks": prefix + records[1] + records[0] + b"".join(records[2:]),
        "a chunk dropped": prefix + records[0] + b"".join(records[2:]),
        "the final chunk dropped": prefix + b"".join(records[:-1]),
        "cut inside a chunk": env[:-10],
        "data after the end": env + records[-1],
        "the final chunk repeated early": prefix + records[-1] + b"".join(records[1:]),
    }
    reasons = {}
    for name, bad in cases.items():
        with pytest.raises(E.EnvelopeError) as exc:
            E.decrypt(bad, key)
        reasons[name] = str(exc.value)
    assert "final chunk is missing" in reasons["the final chunk dropped"]
    assert "truncated" in reasons["cut inside a chunk"]
    assert "after the envelope's final chunk" in reasons["data after the end"]
    assert "chunk 0 does not verify" in reasons["reordered chunks"]


def test_streamed_opening_releases_nothing_unverified(
    ec_pair: tuple[ec.EllipticCurvePrivateKey, E.Recipient],
) -> None:
    key, recipient = ec_pair
    env = E.encrypt(DATA, recipient, FIELDS)
    prefix, _, records = _parts(env)
    opened = E.open_envelope(io.BytesIO(prefix + b"".join(records[:-1])), key)
    got = []
    with pytest.raises(E.EnvelopeError, match="final chunk is missing"):
        for c in opened.chunks:
            got.append(c)
    assert b"".join(got) == DATA[: len(got) * E.CHUNK_SIZE]  # only verified chunks came out


def test_the_sender_cannot_seal_other_data_than_the_header_says(
    ec_pair: tuple[ec.EllipticCurvePrivateKey, E.Recipient],
) -> None:
    _, recipient = ec_pair
    sealing = E.seal(
        recipient,
        [DATA],
        plaintext_sha256=hashlib.sha256(b"other").hexdigest(),
        plaintext_size=len(DATA),
        fields=FIELDS,
    )
    with pytest.raises(E.EnvelopeError, match="not the copy the header describes"):
        list(sealing)


def test_only_certificates_of_the_data_space_ca_are_recipients(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    foreign = CertificateAuthority.create(
        ec.generate_private_key(ec.SECP256R1()), "Test", now=ISSUED
    )  # same name, another key
    with pytest.raises(E.RecipientRefused, match="not issued by this data space's CA"):
        E.recipient_from_certificate(participant(foreign, key), ca.certificate, NOW)
    other = CertificateAuthority.create(ec.generate_private_key(ec.SECP256R1()), "Elsewhere", now=ISSUED)
    with pytest.raises(E.RecipientRefused, match="not issued by this data space's CA"):
        E.recipient_from_certificate(participant(other, key), ca.certificate, NOW)
    with pytest.raises(E.RecipientRefused, match="CA certificate"):
        E.recipient_from_certificate(ca.certificate, ca.certificate, NOW)
    cert = participant(ca, key)
    with pytest.raises(E.RecipientRefused, match="not valid now"):
        E.recipient_from_certificate(cert, ca.certificate, NOW + dt.timedelta(days=400))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(E.RecipientRefused, match="1024 bits"):
        E.recipient_from_certificate(rsa_certificate(ca, small), ca.certificate, NOW)
    with pytest.raises(E.RecipientRefused, match=r"not a PEM X\.509"):
        E.load_certificate(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


def test_ed25519_and_its_x25519_form_agree() -> None:
    for _ in range(20):
        key = ed25519.Ed25519PrivateKey.generate()
        derived = E.x25519_private_of(key).public_key().public_bytes_raw()
        assert E.x25519_public_of(key.public_key()).public_bytes_raw() == derived


# ------------------------------------------------------------------ the agreement's terms


def terms_of(name: str, params: dict[str, str]) -> tuple[object, str]:
    doc = fill(name, params, target="urn:asset:x", assigner="urn:provider")
    return distribution_terms(load_policy(doc)), str(doc["@id"])


def ask(terms: object, *, encrypted: bool, attached: bool = True) -> object:
    return decide(
        terms,
        encrypted=encrypted,
        next_policy_attached=attached,
        now=NOW,  # type: ignore[arg-type]
        assignee="urn:consumer",
        target="urn:asset:x",
    )


def test_distribute_only_if_encrypted() -> None:
    terms, pid = terms_of("distribute-only-if-encrypted", {})
    assert terms.permitted and terms.requires_encryption and not terms.requires_next_policy
    assert terms.encrypt_duties == (f"{pid}#encrypt",)
    assert ask(terms, encrypted=True).permit
    plain = ask(terms, encrypted=False)
    assert not plain.permit
    assert "only encrypted" in plain.reason and "no unencrypted export" in plain.reason
    assert "is violated" in plain.reason  # the engine's reason, by the duty's id


def test_attach_policy_for_third_party() -> None:
    third = "https://provider.example/policies/third-party-use"
    terms, pid = terms_of("attach-policy-for-third-party", {"nextPolicy": third})
    assert terms.permitted and not terms.requires_encryption
    assert terms.next_policy == third and terms.next_policy_duties == (f"{pid}#next-policy",)
    assert ask(terms, encrypted=False).permit and ask(terms, encrypted=True).permit
    without = ask(terms, encrypted=True, attached=False)
    assert not without.permit and "next-policy) is violated" in without.reason


def test_use_alone_does_not_grant_distribution() -> None:
    for name, params in (("n-times-usage", {"max": "3"}), ("allow-usage", {})):
        terms, _ = terms_of(name, params)
        assert not terms.permitted
        decision = ask(terms, encrypted=True)
        assert not decision.permit
        assert decision.reason.startswith("distribute is not granted")
        assert "grants odrl:use (permission 1)" in decision.reason


def test_duties_and_constraints_on_distribute_are_kept() -> None:
    base = {
        "@context": [
            "https://w3id.org/dspace/2025/1/context.jsonld",
            "https://w3id.org/dspace/2025/1/odrl-profile.jsonld",
            {"idsc": T.IDSC_NS},
        ],
        "@type": "Agreement",
        "@id": "urn:agreement:k",
        "target": "urn:asset:x",
        "assigner": "urn:provider",
        "assignee": "urn:consumer",
    }
    # a duty nobody fulfils on export: refused, never ignored
    pay = {**base, "permission": [{"action": "distribute", "duty": [{"action": "compensate"}]}]}
    t = distribution_terms(load_policy(pay))
    assert t.permitted and t.unhandled
    assert "cannot be fulfilled" in ask(t, encrypted=True).reason
    # a time window on distribution: the engine decides it
    late = {
        **base,
        "permission": [
            {
                "action": "distribute",
                "constraint": [
                    {
                        "leftOperand": "dateTime",
                        "operator": "lt",
                        "rightOperand": {"@value": "2020-01-01T00:00:00Z", "@type": "xsd:dateTime"},
                    }
                ],
            }
        ],
    }
    d = ask(distribution_terms(load_policy(late)), encrypted=True)
    assert not d.permit and "dateTime" in d.reason
    # a prohibition of distribution wins over use
    banned = {**base, "permission": [{"action": "use"}], "prohibition": [{"action": "distribute"}]}
    assert not ask(distribution_terms(load_policy(banned)), encrypted=True).permit
    # IDS-G's form of "only if encrypted": the artifact state constraint
    state = {
        **base,
        "permission": [
            {
                "action": "idsc:DISTRIBUTE",
                "constraint": [
                    {"leftOperand": "idsc:ARTIFACT_STATE", "operator": "eq", "rightOperand": "ENCRYPTED"}
                ],
            }
        ],
    }
    t = distribution_terms(load_policy(state))
    assert t.requires_encryption
    assert ask(t, encrypted=True).permit and not ask(t, encrypted=False).permit


def test_the_senders_signature_vouches_for_the_envelope(
    ca: CertificateAuthority, ec_pair: tuple[ec.EllipticCurvePrivateKey, E.Recipient]
) -> None:
    key, recipient = ec_pair
    me = ed25519.Ed25519PrivateKey.generate()
    my_cert = participant(ca, me, "consumer")
    sender = E.Sender(SigningKey.from_private_key(me), my_cert)
    me_id = participant_id(my_cert)
    env = E.encrypt(DATA, recipient, {**FIELDS, "sender": me_id}, sender=sender)
    opened = E.open_envelope(io.BytesIO(env), key, ca=ca.certificate, now=NOW)
    assert opened.sender == me_id and b"".join(opened.chunks) == DATA
    prefix, header, records = _parts(env)
    signature = prefix[prefix.index(b"eyJ") :]
    # unsigned, or signed for another header, or by someone who is not the header's sender
    unsigned = E.encrypt(DATA, recipient, {**FIELDS, "sender": me_id})
    with pytest.raises(E.EnvelopeError, match="not signed"):
        E.decrypt(unsigned, key, ca=ca.certificate, now=NOW)
    assert E.decrypt(unsigned, key) == DATA  # without the CA, no sender is claimed verified
    other = _with_header({**header, "agreementId": "urn:agreement:2"}, records, signature)
    with pytest.raises(E.EnvelopeError, match="another header"):
        E.decrypt(other, key, ca=ca.certificate, now=NOW)
    claimed = E.encrypt(DATA, recipient, {**FIELDS, "sender": "AA:keyid:BB"}, sender=sender)
    with pytest.raises(E.EnvelopeError, match="not by its sender AA:keyid:BB"):
        E.decrypt(claimed, key, ca=ca.certificate, now=NOW)
    foreign = CertificateAuthority.create(ec.generate_private_key(ec.SECP256R1()), "Test", now=ISSUED)
    with pytest.raises(E.EnvelopeError, match="sender certificate is not issued"):
        E.decrypt(env, key, ca=foreign.certificate, now=NOW)


def test_distribute_duties_do_not_bind_local_reads() -> None:
    for name, params in (
        ("distribute-only-if-encrypted", {}),
        ("attach-policy-for-third-party", {"nextPolicy": "https://x.example/p"}),
    ):
        doc = fill(name, params, target="urn:asset:x", assigner="urn:provider")
        assert agreement_duties({k: v for k, v in doc.items() if k != "@context"}).unhandled == ()
    compensate = {"permission": [{"action": "use", "duty": [{"action": "compensate"}]}]}
    assert agreement_duties(compensate).unhandled == ("compensate",)
