"""Unit fixtures for audit: turn events into stored records without a database."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dicomvault.audit.events import AuditEvent
from dicomvault.audit.record import StoredRecord, canonical, decode, seal_event
from dicomvault.crypto.keyring import DataKey
from dicomvault.index.base import utcnow


@pytest.fixture
def dek_map() -> dict[str, DataKey]:
    return {"pk-1": DataKey.generate(), "pk-2": DataKey.generate()}


@pytest.fixture
def stored(dek_map: dict[str, DataKey]) -> Callable[[AuditEvent], StoredRecord]:
    def make(event: AuditEvent, seq: int = 1, shred: tuple[str, ...] = ()) -> StoredRecord:
        body = seal_event(event, dek_map.get, "test-node")
        body.update(seq=seq, recorded=utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        readable = {k: v for k, v in dek_map.items() if k not in shred}
        return decode(seq, canonical(body), readable.get)

    return make
