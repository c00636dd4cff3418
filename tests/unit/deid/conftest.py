"""Fixtures for the de-identification tests (synthetic instances built in code)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicomvault.deid import DeidConfig, DeidResult, Option, deidentify
from tests.unit.deid.deid_builders import KEY, full_table_dataset, roundtrip


@pytest.fixture(scope="session")
def full_input() -> Dataset:
    return roundtrip(full_table_dataset())


@pytest.fixture(scope="session")
def run_full(full_input: Dataset):  # type: ignore[no-untyped-def]
    """De-identify the full-table instance under a set of options (cached per option set)."""
    cache: dict[frozenset[Option], DeidResult] = {}

    def run(*options: Option) -> DeidResult:
        key = frozenset(options)
        if key not in cache:
            cache[key] = deidentify(full_input, DeidConfig(options=key, project="TEST"), KEY)
        return cache[key]

    return run
