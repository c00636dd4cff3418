"""Folder runner: per-file outcomes, bad input never stops a batch, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomvault.deid import DeidConfig
from dicomvault.deid.batch import run_batch, write_atomic
from tests.unit.deid.deid_builders import KEY, full_table_dataset


def _write(ds, path: Path) -> Path:  # type: ignore[no-untyped-def]
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    _write(full_table_dataset(instance="1"), src / "good1.dcm")
    _write(full_table_dataset(instance="2"), src / "sub" / "SMITHSON_JOHN.dcm")
    (src / "notes.txt").write_text("not dicom at all")
    (src / "empty.dcm").write_bytes(b"")
    (src / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    truncated = full_table_dataset(instance="3")
    truncated.PixelData = truncated.PixelData[:100]
    _write(truncated, src / "truncated.dcm")
    return src


def test_batch_reports_each_bad_file_and_finishes(inbox: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    report = run_batch(inbox, tmp_path / "out", DeidConfig(project="B"), KEY,
                       progress=lambda done, total, _p: seen.append((done, total)))
    by_name = {o.source.name: o for o in report.outcomes}
    assert {n: o.status for n, o in by_name.items()} == {
        "good1.dcm": "ok", "SMITHSON_JOHN.dcm": "ok", "notes.txt": "error",
        "empty.dcm": "error", "garbage.dcm": "error", "truncated.dcm": "error",
    }
    assert by_name["truncated.dcm"].detail == "pixel data is truncated"
    assert by_name["notes.txt"].detail == "not a DICOM file"
    assert seen == [(i, 6) for i in range(1, 7)]
    assert report.mappings


def test_batch_outputs_parse_decode_and_hide_input_names(inbox: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_batch(inbox, out, DeidConfig(project="B"), KEY)
    files = sorted(out.iterdir())
    assert len(files) == 2
    for path in files:
        assert "SMITHSON" not in path.name and path.name.startswith("2.25.")
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.pixel_array.shape == (64, 64)


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    ds = full_table_dataset()
    ds.add_new(0x00280010, "US", "not-a-number")  # encoding this fails mid-write
    target = tmp_path / "out" / "x.dcm"
    with pytest.raises(Exception):  # noqa: B017 - any encoder error
        write_atomic(ds, target)
    assert list((tmp_path / "out").iterdir()) == []


def test_refused_file_is_not_written(tmp_path: Path) -> None:
    ds = full_table_dataset()
    ds.ConvolutionKernel = "SMITHSON"
    src = _write(ds, tmp_path / "one.dcm")
    report = run_batch(src, tmp_path / "out", DeidConfig(project="B"), KEY)
    assert [o.status for o in report.outcomes] == ["refused"]
    assert "(0018,1210)" in report.outcomes[0].detail
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_single_file_to_named_output(tmp_path: Path) -> None:
    src = _write(full_table_dataset(), tmp_path / "one.dcm")
    report = run_batch(src, tmp_path / "res.dcm", DeidConfig(project="B"), KEY)
    assert report.outcomes[0].output == tmp_path / "res.dcm"
    assert np.asarray(pydicom.dcmread(tmp_path / "res.dcm").pixel_array).size == 64 * 64
