"""Hash-chained, signed audit log; verification; cross-check of usage receipts."""

from connector.audit.log import (
    GENESIS,
    ID_FIELDS,
    AuditError,
    AuditLog,
    Entry,
    Head,
    Problem,
    VerifyReport,
    head_path_for,
    read_entries,
    read_head,
    verify_file,
)
from connector.audit.receipts import Receipt, cross_check, receipts_from_entries, sign_receipt, verify_receipt
from connector.audit.signing import KeySigner, Signer, canonical

__all__ = [
    "GENESIS",
    "ID_FIELDS",
    "AuditError",
    "AuditLog",
    "Entry",
    "Head",
    "KeySigner",
    "Problem",
    "Receipt",
    "Signer",
    "VerifyReport",
    "canonical",
    "cross_check",
    "head_path_for",
    "read_entries",
    "read_head",
    "receipts_from_entries",
    "sign_receipt",
    "verify_file",
    "verify_receipt",
]
