"""Which parts of a data address are secret, and how they are masked.

Fail closed: every value inside a headers object (any key ending in `headers` or `header`:
upstream auth headers are the usual secret, and a header's name does not reliably say whether it
carries one) and every value whose key names a credential (`authorization`, `password`, `secret`,
`token`, `apiKey`, `authCode`, `cookie`, `credential`, `privateKey`, ...) at any depth is replaced
by `MASK`. Keys that only point at a credential (`tokenUrl`, `secretName`, `tokenType`) stay.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

_SECRET_KEY = re.compile(
    r"(authori[sz]ation|passw(or)?d|passphrase|secret|token|api[-_]?key|auth[-_]?(code|key|header)"
    r"|cookie|credential|private[-_]?key|signature|access[-_]?key|session)",
    re.IGNORECASE,
)


_POINTER_SUFFIXES = ("url", "uri", "endpoint", "type", "name", "path")


def is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None and not key.lower().endswith(_POINTER_SUFFIXES)


def mask_secrets(value: Any) -> Any:
    """A copy of `value` with every secret leaf replaced by `MASK`."""
    if isinstance(value, dict):
        masked: dict[str, Any] = {}
        for key, item in value.items():
            if is_secret_key(str(key)):
                masked[key] = _mask_leaves(item)
            elif str(key).lower().endswith(("headers", "header")):
                masked[key] = _mask_headers(item)
            else:
                masked[key] = mask_secrets(item)
        return masked
    if isinstance(value, list):
        return [mask_secrets(item) for item in value]
    return value


def _mask_headers(headers: Any) -> Any:
    # An object maps header names to values: every value is secret. A list holds
    # {"name": ..., "value": ...} records: the names stay readable.
    if isinstance(headers, list):
        return [
            {
                key: item
                if str(key).lower() in ("name", "key") and isinstance(item, str)
                else _mask_leaves(item)
                for key, item in record.items()
            }
            if isinstance(record, dict)
            else _mask_leaves(record)
            for record in headers
        ]
    return _mask_leaves(headers)


def _mask_leaves(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _mask_leaves(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_leaves(item) for item in value]
    return None if value is None else MASK


def restore_masked(new: Any, previous: Any) -> Any:
    """`new` with every `MASK` value taken back from `previous` at the same place.

    A management client that read an asset (masked), edited it and wrote it back keeps the
    stored secrets instead of overwriting them with the mask.
    """
    if isinstance(new, str) and new == MASK:
        return previous if previous is not None else new
    if isinstance(new, dict) and isinstance(previous, dict):
        return {key: restore_masked(item, previous.get(key)) for key, item in new.items()}
    if isinstance(new, list) and isinstance(previous, list) and len(new) == len(previous):
        return [restore_masked(item, old) for item, old in zip(new, previous, strict=True)]
    return new
