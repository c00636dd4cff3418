"""Patient DEKs: creation, an unwrapped-DEK cache, crypto-shredding lookups.

Hot paths (ingest of a study's 500 instances, a QIDO page of 100 studies)
unwrap a patient's DEK once and reuse it from this bounded TTL cache instead
of unwrapping per instance.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.crypto.keyring import DataKey, Keyring, WrappedKey
from dicomvault.index.models import Patient


class DekCache:
    """Bounded LRU of unwrapped DEKs keyed by patient key id, with a TTL."""

    def __init__(self, keyring: Keyring, size: int = 4096, ttl_seconds: float = 600,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._keyring = keyring
        self._size = size
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, DataKey]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key_id: str, wrapped: str | None) -> DataKey | None:
        """The DEK for ``key_id``; None when the patient was erased (no wrapped DEK)."""
        if wrapped is None:
            self.forget(key_id)
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key_id)
            if entry and now - entry[0] < self._ttl:
                self._entries.move_to_end(key_id)
                self.hits += 1
                return entry[1]
        dek = self._keyring.unwrap(WrappedKey.from_str(wrapped))
        with self._lock:
            self.misses += 1
            self._entries[key_id] = (now, dek)
            self._entries.move_to_end(key_id)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return dek

    def peek(self, key_id: str) -> DataKey | None:
        """A cached, unexpired DEK without touching the index (None if not cached)."""
        with self._lock:
            entry = self._entries.get(key_id)
            if entry and self._clock() - entry[0] < self._ttl:
                return entry[1]
        return None

    def put(self, key_id: str, dek: DataKey) -> None:
        with self._lock:
            self._entries[key_id] = (self._clock(), dek)

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._entries.pop(key_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class PatientKeys:
    """Resolve a patient key id to its DEK through the index and the cache."""

    def __init__(self, factory: sessionmaker[Session], cache: DekCache) -> None:
        self._factory = factory
        self.cache = cache

    def dek_for(self, key_id: str, session: Session | None = None) -> DataKey | None:
        """The DEK for sealing/opening (audit PHI, mappings); cached keys skip the index.

        An erasure in this process forgets the cached key at once; another
        node's erasure is seen within the cache TTL.
        """
        cached = self.cache.peek(key_id)
        if cached is not None:
            return cached

        def lookup(s: Session) -> str | None:
            return s.execute(select(Patient.wrapped_dek).where(Patient.key_id == key_id)).scalar()

        if session is not None:
            return self.cache.get(key_id, lookup(session))
        with self._factory() as s:
            return self.cache.get(key_id, lookup(s))
