"""Typed identity errors: each carries an OAuth 2.0 error code, an HTTP status and a clear reason.

HTTP edges map them to `{"error": ..., "error_description": ...}` bodies; library callers read
`description` (also the exception message) to learn why a token or request was refused.
"""

from __future__ import annotations


class IdentityError(Exception):
    """Base class: a refused token, request or registration. Never a server fault."""

    error: str = "invalid_request"
    status: int = 400

    def __init__(self, description: str, *, error: str | None = None, status: int | None = None):
        super().__init__(description)
        self.description = description
        if error is not None:
            self.error = error
        if status is not None:
            self.status = status

    def to_oauth(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidToken(IdentityError):
    """A presented token (DAT, transfer token, revocation list) failed verification."""

    error = "invalid_token"
    status = 401


class AttributesChanged(InvalidToken):
    """A DAT (or a transfer token's attested snapshot) predates the last change of what the
    authority attests about its participant: the holder must fetch a fresh token."""

    def __init__(self, description: str, *, changed_at: float):
        super().__init__(description)
        self.changed_at = changed_at


class InvalidClient(IdentityError):
    """Client authentication at the authority failed (RFC 6749 section 5.2)."""

    error = "invalid_client"
    status = 401


class InvalidRequest(IdentityError):
    """A request is malformed: missing or repeated parameters, wrong content type, bad JSON."""


class InvalidGrant(IdentityError):
    """A refresh token or grant is invalid, expired, replayed or bound to someone else."""

    error = "invalid_grant"


class UnsupportedGrantType(IdentityError):
    error = "unsupported_grant_type"


class InvalidScope(IdentityError):
    error = "invalid_scope"


class RegistrationError(IdentityError):
    """A CSR or certificate cannot be registered (bad signature, foreign CA, name taken...)."""


class Conflict(RegistrationError):
    status = 409


class NotFound(IdentityError):
    error = "not_found"
    status = 404


class Unauthorized(IdentityError):
    """The admin API was called without a valid admin token."""

    error = "invalid_token"
    status = 401


class TokenUnavailable(IdentityError):
    """The DAT client could not obtain a token and holds no still-valid one."""

    error = "temporarily_unavailable"
    status = 503
