"""Verification pass: residual identifiers anywhere refuse release, without echoing PHI."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomvault.deid import DeidConfig, deidentify
from tests.unit.deid.deid_builders import KEY, PATIENT_ID, full_table_dataset, roundtrip


def _plant_in_unlisted(ds: Dataset) -> str:
    ds.ConvolutionKernel = "SMITHSON"  # unlisted attribute: the profile keeps it
    return "(0018,1210)"


def _plant_in_nested(ds: Dataset) -> str:
    item = Dataset()
    item.BodyPartExamined = PATIENT_ID  # inside an unlisted sequence
    ds.ReferencedSeriesSequence = Sequence([item])
    return "(0008,1115)[0]>(0018,0015)"


def _plant_name_variant(ds: Dataset) -> str:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "JOHNATHAN"]  # a PN component, in a CS
    return "(0008,0008)"


def _plant_date_variant(ds: Dataset) -> str:
    ds.ConvolutionKernel = "2024-03-15"  # the Study Date, written another way
    return "(0018,1210)"


@pytest.mark.parametrize("plant", [_plant_in_unlisted, _plant_in_nested, _plant_name_variant,
                                   _plant_date_variant])
def test_residual_identifier_refuses_release(plant) -> None:  # type: ignore[no-untyped-def]
    source = full_table_dataset()
    where = plant(source)
    result = deidentify(roundtrip(source), DeidConfig(project="V"), KEY)
    assert not result.released
    assert [f.where for f in result.verification.findings] == [where]
    report = repr(result.verification)
    assert "SMITHSON" not in report and PATIENT_ID not in report and "2024" not in report


def test_value_also_held_by_kept_attribute_is_not_flagged() -> None:
    source = full_table_dataset()
    source.StudyDescription = "CHEST"  # X; the kept Body Part Examined is also CHEST
    result = deidentify(roundtrip(source), DeidConfig(project="V"), KEY)
    assert result.released


def test_verification_can_be_turned_off_for_trusted_pipelines() -> None:
    source = full_table_dataset()
    _plant_in_unlisted(source)
    result = deidentify(roundtrip(source), DeidConfig(project="V", verify=False), KEY)
    assert result.released and result.dataset.ConvolutionKernel == "SMITHSON"
