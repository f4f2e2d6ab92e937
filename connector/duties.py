"""Transitional re-exports for connector/runtime.py and connector/serve.py until they are
re-wired to connector.consumer (the lead removes this module at the runtime merge). The code
lives in connector.consumer.notices, .duties and .vault; ``Vault`` here is the object serve.py
puts in the control plane's duty tuple (connector.consumer.compat.RuntimeVault)."""

from __future__ import annotations

from connector.consumer.compat import RuntimeVault as Vault
from connector.consumer.duties import delete_after
from connector.consumer.notices import (
    NOTICE_TYP,
    NOTICE_TYPS,
    USE_NOTICE_TYP,
    NoticeError,
    sign_notice,
    sign_use_notice,
    verify_notice,
)
from connector.consumer.vault import VaultItem

__all__ = ["NOTICE_TYP", "NOTICE_TYPS", "USE_NOTICE_TYP", "NoticeError", "Vault", "VaultItem",
           "delete_after", "sign_notice", "sign_use_notice", "verify_notice"]
