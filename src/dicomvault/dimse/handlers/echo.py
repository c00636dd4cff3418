"""C-ECHO SCP (PS3.7 9.1.5, PS3.4 A Verification Service Class)."""

from __future__ import annotations

from typing import Any

from dicomvault.dimse import status
from dicomvault.dimse.handlers._common import require_service
from dicomvault.errors import DicomVaultError


def handle_echo(event: Any) -> int:
    """Answer 0x0000, or 0x0124 when the peer may not use echo (PS3.7 C.4)."""
    try:
        require_service(event.assoc, "echo")
    except DicomVaultError:
        return status.NOT_AUTHORIZED
    return status.SUCCESS
