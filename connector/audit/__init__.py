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
from connector.audit.receipts import RECEIPT_KIND, LoggedReceipt, cross_check, read_receipts, receipt_data
from connector.audit.signing import KeySigner, Signer, canonical

__all__ = [
    "GENESIS",
    "ID_FIELDS",
    "RECEIPT_KIND",
    "AuditError",
    "AuditLog",
    "Entry",
    "Head",
    "KeySigner",
    "LoggedReceipt",
    "Problem",
    "Signer",
    "VerifyReport",
    "canonical",
    "cross_check",
    "head_path_for",
    "read_entries",
    "read_head",
    "read_receipts",
    "receipt_data",
    "verify_file",
]
