"""The authority's files: configuration, CA, signing keys, participants and revocations.

Layout of an authority directory:

    authority.json   configuration (name, algorithm, issuer, lifetimes, admin token hash)
    ca.key ca.crt    the data-space CA (key 0600)
    signing/KID.key  token-signing private keys (0600); only `next` and `current` keep theirs
    state.json       participants, revocations, signing-key roster (current/next/previous)
    admin.token      the admin API bearer token (0600), for the operator
    .lock            flock'd around every read-modify-write

Every write is atomic (temp file + rename) under the lock, so the CLI and a running `serve`
can both change state; the server notices a new state.json by its inode/mtime and reloads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from connector.identity.ca import (
    CertificateAuthority,
    certificate_pem,
    participant_id,
    public_key_of,
)
from connector.identity.errors import IdentityError
from connector.identity.jose import VerificationKey
from connector.identity.keys import (
    Algorithm,
    SigningKey,
    algorithm_of,
    atomic_write,
    generate_private_key,
    load_private_key_pem,
    private_key_to_pem,
)
from connector.identity.participants import Jurisdiction, check_group_name, check_iri
from connector.identity.tokens import DAT_AUDIENCE, ROLES, SECURITY_PROFILES

T = TypeVar("T")

SecurityProfile = Literal[
    "idsc:BASE_SECURITY_PROFILE", "idsc:TRUST_SECURITY_PROFILE", "idsc:TRUST_PLUS_SECURITY_PROFILE"
]
# a participant's roles in the data space (a process's role is connector.wireformat.ProcessRole)
ParticipantRole = Literal["provider", "consumer", "broker"]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
assert set(SecurityProfile.__args__) == set(SECURITY_PROFILES)  # type: ignore[attr-defined]
assert set(ParticipantRole.__args__) == set(ROLES)  # type: ignore[attr-defined]
_URL_RE = re.compile(r"https?://[^\s\"<>\\]{1,2040}")


class ParticipantAttributes(BaseModel):
    """What the authority states about a participant in its DATs."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    security_profile: SecurityProfile = Field(default="idsc:BASE_SECURITY_PROFILE", alias="securityProfile")
    membership: bool = True
    roles: tuple[ParticipantRole, ...] = ("provider", "consumer")
    referring_connector: str | None = Field(default=None, alias="referringConnector")
    transport_certs_sha256: tuple[Sha256Hex, ...] = Field(
        default=(), alias="transportCertsSha256", max_length=8
    )
    # cross-border rules and groups (connector.identity.participants says the forms)
    jurisdiction: Jurisdiction | None = None
    certifications: tuple[str, ...] = Field(default=(), max_length=32)
    groups: tuple[str, ...] = Field(default=(), max_length=64)

    @field_validator("certifications")
    @classmethod
    def _certifications(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for v in values:
            check_iri(v, "a certification")
        if len(set(values)) != len(values):
            raise ValueError("certifications must not repeat")
        return values

    @field_validator("groups")
    @classmethod
    def _groups(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for v in values:
            check_group_name(v)
        if len(set(values)) != len(values):
            raise ValueError("groups must not repeat")
        return values

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, roles: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(roles)) != len(roles):
            raise ValueError("roles must not repeat")
        return roles

    @field_validator("referring_connector")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None and not _URL_RE.fullmatch(url):
            raise ValueError("referringConnector must be an http(s) URL")
        return url

    def claims(self, name: str) -> dict[str, Any]:
        data = self.model_dump(by_alias=True)
        data["name"] = name
        data["jurisdiction"] = self.jurisdiction.claim() if self.jurisdiction else None
        return data

    @property
    def attested(self) -> tuple[Any, ...]:
        """What a relying party decides on: a change here makes earlier DATs stale."""
        return (
            self.security_profile,
            self.membership,
            self.roles,
            self.referring_connector,
            self.jurisdiction,
            self.certifications,
            self.groups,
        )


class ParticipantRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    participant_id: str
    name: str
    certificate: str
    attributes: ParticipantAttributes
    registered_at: float
    revoked_at: float | None = None
    revocation_reason: str | None = None
    # when the attested attributes last changed (the next whole second): the authority's
    # revocation list carries it, and connectors refuse this participant's DATs issued before
    attributes_changed_at: int | None = None


class GroupRecord(BaseModel):
    """A named group of participants (its members carry the name in their attributes)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = Field(default="", max_length=500)
    created_at: float

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_group_name(name)


class SigningKeyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kid: str
    alg: Algorithm
    status: Literal["next", "current", "previous"]
    created_at: float
    retire_at: float | None = None
    jwk: dict[str, str]


class AuthorityState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    participants: dict[str, ParticipantRecord] = Field(default_factory=dict)
    revocation_seq: int = 0
    keys: list[SigningKeyRecord] = Field(default_factory=list)
    groups: dict[str, GroupRecord] = Field(default_factory=dict)

    def key_with(self, status: str) -> SigningKeyRecord | None:
        return next((k for k in self.keys if k.status == status), None)

    def published_keys(self, now: float) -> list[SigningKeyRecord]:
        return [k for k in self.keys if k.retire_at is None or k.retire_at > now]


class AuthorityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    alg: Algorithm
    issuer: str | None = None
    audience: str = DAT_AUDIENCE
    dat_lifetime: int = Field(default=3600, ge=60, le=86400)
    assertion_max_lifetime: int = Field(default=300, ge=10, le=300)
    leeway: float = Field(default=30.0, ge=0, le=120)
    certificate_validity_days: int = Field(default=365, ge=1, le=3650)
    key_overlap: int | None = Field(default=None, ge=0)
    admin_token_sha256: str

    @property
    def default_key_overlap(self) -> int:
        return self.key_overlap if self.key_overlap is not None else self.dat_lifetime


class StoreError(IdentityError):
    """The authority directory is missing or inconsistent."""


def admin_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class AuthorityStore:
    CONFIG = "authority.json"
    STATE = "state.json"
    CA_KEY = "ca.key"
    CA_CERT = "ca.crt"
    KEYS_DIR = "signing"
    ADMIN_TOKEN = "admin.token"
    LOCK = ".lock"

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        config_path = self.directory / self.CONFIG
        if not config_path.is_file():
            raise StoreError(f"{self.directory} is not an authority directory (no {self.CONFIG})")
        self.config = AuthorityConfig.model_validate_json(config_path.read_bytes())
        self.ca = CertificateAuthority(
            key=load_private_key_pem((self.directory / self.CA_KEY).read_bytes()),
            certificate=x509.load_pem_x509_certificate((self.directory / self.CA_CERT).read_bytes()),
        )
        self._state_path = str(self.directory / self.STATE)
        self._state: AuthorityState | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._signing_keys: dict[str, SigningKey] = {}
        self._participant_keys: dict[str, tuple[VerificationKey, x509.Certificate]] = {}

    @classmethod
    def initialize(
        cls,
        directory: Path | str,
        *,
        name: str,
        alg: Algorithm,
        now: float,
        admin_token: str,
        issuer: str | None = None,
        dat_lifetime: int = 3600,
        ca_key: Any = None,
        signing_key: SigningKey | None = None,
    ) -> AuthorityStore:
        root = Path(directory)
        if (root / cls.CONFIG).exists():
            raise StoreError(f"{root} already holds an authority")
        root.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.create(ca_key or generate_private_key(alg), name, now=now)
        signing = signing_key or SigningKey.generate(alg)
        config = AuthorityConfig(
            name=name,
            alg=alg,
            issuer=issuer,
            dat_lifetime=dat_lifetime,
            admin_token_sha256=admin_token_hash(admin_token),
        )
        atomic_write(root / cls.CA_KEY, private_key_to_pem(ca.key), mode=0o600)
        atomic_write(root / cls.CA_CERT, certificate_pem(ca.certificate).encode())
        atomic_write(
            root / cls.KEYS_DIR / f"{signing.kid}.key",
            private_key_to_pem(signing.private_key),
            mode=0o600,
        )
        atomic_write(root / cls.ADMIN_TOKEN, (admin_token + "\n").encode(), mode=0o600)
        state = AuthorityState(
            keys=[
                SigningKeyRecord(
                    kid=signing.kid,
                    alg=signing.alg,
                    status="current",
                    created_at=now,
                    jwk=signing.jwk(),
                )
            ]
        )
        atomic_write(root / cls.STATE, state.model_dump_json(indent=1).encode())
        # the config goes last: its presence marks a complete authority directory
        atomic_write(root / cls.CONFIG, config.model_dump_json(indent=1).encode())
        return cls(root)

    # -- state ------------------------------------------------------------------------------

    def _read_state(self) -> tuple[AuthorityState, tuple[int, int, int]]:
        path = self.directory / self.STATE
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
        return AuthorityState.model_validate_json(data), (st.st_ino, st.st_mtime_ns, st.st_size)

    def state(self) -> AuthorityState:
        """The current state, reloaded if another process replaced state.json."""
        try:
            st = os.stat(self._state_path)
        except FileNotFoundError as exc:
            raise StoreError(f"{self._state_path} is missing") from exc
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._state is None or stamp != self._stamp:
            self._state, self._stamp = self._read_state()
            self._participant_keys.clear()
        return self._state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.directory / self.LOCK).open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def mutate(self, change: Callable[[AuthorityState], T]) -> T:
        """Apply `change` to a fresh copy of the state and persist it; nothing on error."""
        with self._locked():
            current, _ = self._read_state()
            draft = current.model_copy(deep=True)
            result = change(draft)
            atomic_write(self.directory / self.STATE, draft.model_dump_json(indent=1).encode())
            self._state, self._stamp = self._read_state()
            self._participant_keys.clear()
            return result

    # -- keys -------------------------------------------------------------------------------

    def signing_key(self, kid: str) -> SigningKey:
        key = self._signing_keys.get(kid)
        if key is None:
            path = self.directory / self.KEYS_DIR / f"{kid}.key"
            try:
                private = load_private_key_pem(path.read_bytes())
            except FileNotFoundError as exc:
                raise StoreError(f"signing key {kid} has no private key file") from exc
            key = SigningKey(kid=kid, alg=algorithm_of(private), private_key=private)
            self._signing_keys[kid] = key
        return key

    def write_signing_key(self, key: SigningKey) -> None:
        atomic_write(
            self.directory / self.KEYS_DIR / f"{key.kid}.key",
            private_key_to_pem(key.private_key),
            mode=0o600,
        )

    def delete_signing_key(self, kid: str) -> None:
        (self.directory / self.KEYS_DIR / f"{kid}.key").unlink(missing_ok=True)
        self._signing_keys.pop(kid, None)

    def participant_key(self, pid: str) -> tuple[VerificationKey, x509.Certificate] | None:
        """The registered participant's public key and certificate (parsed once per state)."""
        record = self.state().participants.get(pid)  # first: may reload and clear the cache
        if record is None:
            return None
        cached = self._participant_keys.get(pid)
        if cached is not None:
            return cached
        cert = x509.load_pem_x509_certificate(record.certificate.encode())
        public = public_key_of(cert)
        if participant_id(cert) != pid:
            raise StoreError(f"state.json: certificate of {pid} does not match its id")
        entry = (VerificationKey(kid=None, alg=algorithm_of(public), key=public), cert)
        self._participant_keys[pid] = entry
        return entry

    def read_admin_token(self) -> str:
        return (self.directory / self.ADMIN_TOKEN).read_text().strip()
