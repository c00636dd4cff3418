"""The de-identifier: PS3.15 Annex E Basic Profile with its options, applied recursively.

``deidentify(dataset, config, keys)`` never changes its input: it works on a
copy, applies Table E.1-1 (with the option columns selected) to every data
element at every depth, handles private blocks, curves and overlays, cleans
the pixels under Clean Pixel Data, marks the result (PS3.15 E.1.1 / PS3.3
C.12.1.1.7) and re-scans it before release (see ``verify.py``).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import UID, UID_dictionary

from dicomvault.deid.identifiers import TEXT_VRS, IdentifierSet, split_values
from dicomvault.deid.ocr import Box, OcrEngine, render_frame, tesseract_available
from dicomvault.deid.options import BASIC_PROFILE, CODING_SCHEME, OPTION_CODES, MethodCode, Option
from dicomvault.deid.pixels import PixelCleanReport, RegionRules, clean_pixel_data
from dicomvault.deid.profile import DeidConfig
from dicomvault.deid.profile_table import ProfileTable, TableRow, load_table
from dicomvault.deid.pseudonym import (
    MappingRecord,
    Pseudonymizer,
    PseudonymKeys,
    shift_date,
    shift_datetime,
)
from dicomvault.deid.verify import VerificationReport, verify_output
from dicomvault.errors import InvalidInputError

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
PIXEL_DATA = 0x7FE00010
CONTENT_SEQUENCE = 0x0040A730
DUMMY_TEXT = "DEIDENTIFIED"
#: This implementation's UID (PS3.7 D.3.3.2), a 2.25 UID of a fixed name-based UUID.
IMPLEMENTATION_UID = UID("2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:dicomvault:deid").int))
IMPLEMENTATION_VERSION = "DICOMVAULT01"
DUMMY_BY_VR = {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y",
               "DS": "0", "IS": "0", "UR": "urn:dicomvault:deidentified", "CS": DUMMY_TEXT}
BINARY_ZERO = {"US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0, "UV": 0, "SV": 0}
#: Compound codes (PS3.15 E.1.1): "conformant" keeps the element (valid for any IOD Type).
COMPOUND = {
    "conformant": {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"},
    "minimal": {"X/Z": "X", "X/D": "X", "Z/D": "Z", "X/Z/D": "X", "X/Z/U*": "X"},
}
#: Coded-entry attributes kept inside dummied/cleaned sequences (they carry no identity).
CODE_KEYWORDS = frozenset({
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
    "LongCodeValue", "URNCodeValue", "ValueType", "RelationshipType", "ContinuityOfContent",
    "TemplateIdentifier", "MappingResource", "ContextIdentifier", "ContextGroupVersion",
    "MappingResourceName", "ContextUID", "MappingResourceUID", "TemporalRangeType",
})
CODE_TAGS = frozenset(Tag(k) for k in CODE_KEYWORDS)
DATE_VRS = frozenset({"DA", "DT", "TM"})


@dataclass(frozen=True)
class ActionRecord:
    """One action taken: where (tag path, no values) and which Table E.1-1 code."""

    path: str
    action: str


@dataclass
class DeidResult:
    """The de-identified dataset with what was done and whether it may be released."""

    dataset: Dataset
    mappings: list[MappingRecord]
    actions: list[ActionRecord]
    methods: list[MethodCode]
    verification: VerificationReport
    pixels: PixelCleanReport | None = None

    @property
    def released(self) -> bool:
        """True when verification found no residual identifier (PS3.15 E.1.1)."""
        return self.verification.passed


@dataclass
class _Context:
    table: ProfileTable
    config: DeidConfig
    pseud: Pseudonymizer
    ids: IdentifierSet
    patient_key: str
    date_offset: int | None
    actions: list[ActionRecord] = field(default_factory=list)


def _path(parent: str, tag: int) -> str:
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{parent}>{text}" if parent else text


def _patient_key(ds: Dataset) -> str:
    pid = str(ds.get("PatientID", "") or "").strip()
    issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
    if pid:
        return f"{issuer}\\{pid}"
    name = str(ds.get("PatientName", "") or "").strip()
    return f"name\\{name}" if name else f"study\\{ds.get('StudyInstanceUID', '')}"


# ---------------------------------------------------------------------------
# Pre-pass: collect the input's identifying values.
# ---------------------------------------------------------------------------

def _effective(row: TableRow, config: DeidConfig) -> str:
    action = row.action(config.options)
    return COMPOUND[config.compound].get(action, action)


def _is_strong(elem: DataElement) -> bool:
    """Patient-module values and identifiers are identifying wherever they reappear."""
    keyword = elem.keyword or ""
    return (elem.tag.group == 0x0010 and elem.VR not in ("CS", "AS", "DS", "IS", "TM")) or \
        keyword.endswith(("ID", "Number", "Identifier", "Address", "TelephoneNumbers"))


def _collect(ds: Dataset, ctx: _Context, mode: str = "table") -> None:
    """Sort the input's values into identifying (to remove) and kept, mirroring ``_walk``."""
    for elem in ds:
        tag = int(elem.tag)
        if tag == PIXEL_DATA:
            continue
        row = ctx.table.lookup(tag)
        if elem.tag.is_private:
            action = "K" if Option.RETAIN_SAFE_PRIVATE in ctx.config.options else "X"
        elif row is not None:
            action = _effective(row, ctx.config)
        elif tag in CODE_TAGS and mode in ("dummy", "clean"):
            action = "K"
        else:
            action = {"dummy": "D", "dummy-all": "D", "clean": "C", "removed": "X"}.get(mode, "K")
        if elem.VR == "UI" and action in ("D", "C") and \
                Option.RETAIN_UIDS in ctx.config.options:
            action = "K"  # dummied/cleaned UIDs are kept under Retain UIDs (see _dummy/_clean)
        if elem.VR == "SQ":
            sub = {"X": "removed", "Z": "removed", "D": _dummy_mode(tag, mode),
                   "C": "clean"}.get(action, mode if action == "K" else "table")
            for item in elem.value or []:
                _collect(item, ctx, sub)
            continue
        if elem.VR not in TEXT_VRS:
            continue
        if action == "K" or (action == "C" and elem.VR == "TM"):
            ctx.ids.keep(elem.value, coded=tag in CODE_TAGS, vr=elem.VR)
        elif action != "C" or elem.VR in ("DA", "DT"):
            ctx.ids.add(elem.value, elem.VR, strong=_is_strong(elem))


# ---------------------------------------------------------------------------
# The walk: apply one action per element, recursing into sequences.
# ---------------------------------------------------------------------------

def _dummy(elem: DataElement, ctx: _Context) -> None:
    vr = elem.VR
    if vr == "UI":
        if Option.RETAIN_UIDS not in ctx.config.options:
            _uid(elem, ctx)
    elif vr == "PN":
        elem.value = DUMMY_TEXT
    elif vr in DUMMY_BY_VR:
        elem.value = DUMMY_BY_VR[vr]
    elif vr in TEXT_VRS:
        elem.value = DUMMY_TEXT
    elif vr in BINARY_ZERO:
        elem.value = BINARY_ZERO[vr]
    elif vr in ("OB", "OW", "UN", "OD", "OF", "OL", "OV"):
        elem.value = b"\x00" * (8 if vr in ("OD", "OV") else 4)
    else:
        elem.value = None


def _uid(elem: DataElement, ctx: _Context) -> None:
    values = split_values(elem.value)
    mapped = [v if v in UID_dictionary else ctx.pseud.uid(v) for v in values]
    elem.value = mapped if len(mapped) > 1 else (mapped[0] if mapped else None)


def _clean(elem: DataElement, ctx: _Context) -> None:
    """The C action (PS3.15 E.1.1): similar meaning, no identifying information."""
    vr = elem.VR
    if vr in DATE_VRS:
        if Option.RETAIN_FULL_DATES in ctx.config.options:
            return
        if ctx.date_offset is None or vr == "TM":
            # Shifts are whole days: times of day carry no date information.
            if vr != "TM":
                elem.value = None
            return
        shift = shift_date if vr == "DA" else shift_datetime
        values = [shift(v, ctx.date_offset) for v in split_values(elem.value)]
        elem.value = values if len(values) > 1 else (values[0] if values else None)
    elif vr == "UI":
        if Option.RETAIN_UIDS not in ctx.config.options:
            _uid(elem, ctx)
    elif vr in TEXT_VRS and vr not in ("DS", "IS", "CS", "AS"):
        values = [ctx.ids.scrub(v) for v in split_values(elem.value)]
        elem.value = values if len(values) > 1 else (values[0] if values else None)


def _dummy_mode(tag: int, mode: str) -> str:
    """D on a sequence: SR content keeps its coded concepts; any other sequence is all dummy."""
    return "dummy" if tag == CONTENT_SEQUENCE or mode == "dummy" else "dummy-all"


def _apply(ds: Dataset, tag: int, elem: DataElement, action: str, mode: str,
           ctx: _Context, path: str) -> None:
    if action == "X":
        del ds[tag]
    elif action == "Z":
        elem.value = Sequence() if elem.VR == "SQ" else None
    elif elem.VR == "SQ":
        sub = {"D": _dummy_mode(tag, mode), "C": "clean"}.get(
            action, mode if action == "K" else "table")
        for index, item in enumerate(elem.value or []):
            _walk(item, ctx, sub, f"{path}[{index}]")
    elif action == "K":
        pass
    elif action == "U":
        _uid(elem, ctx)
    elif action == "C":
        _clean(elem, ctx)
    elif action == "D":
        _dummy(elem, ctx)
    ctx.actions.append(ActionRecord(path, action))


def _walk(ds: Dataset, ctx: _Context, mode: str, parent: str = "") -> None:
    """Apply Table E.1-1 to ``ds``; ``mode`` governs unlisted leaves (table/dummy/clean)."""
    _private(ds, ctx, parent)
    for key in list(ds.keys()):
        tag = int(key)
        if tag not in ds or key.is_private:
            continue
        elem = ds[tag]
        path = _path(parent, tag)
        group = tag >> 16
        if tag == PIXEL_DATA or group == 0x0002:
            continue
        if tag in (PATIENT_ID, PATIENT_NAME) and not parent:
            if str(elem.value or "").strip() or tag == PATIENT_ID:
                elem.value = (ctx.pseud.patient_id(ctx.patient_key) if tag == PATIENT_ID else
                              ctx.pseud.patient_name(ctx.patient_key, str(elem.value)))
                ctx.ids.generated.add(str(elem.value).upper())
            ctx.actions.append(ActionRecord(path, "D"))
            continue
        row = ctx.table.lookup(tag)
        if row is not None:
            action = _effective(row, ctx.config)
            if 0x6000 <= group <= 0x601E and tag & 0xFFFF == 0x3000:
                _overlay(ds, group, action, ctx, path)
                continue
            if 0x5000 <= group <= 0x501E:
                action = {"C": "C", "X": "X"}.get(action, "X")
            _apply(ds, tag, elem, action, mode, ctx, path)
        elif elem.VR == "SQ":
            for index, item in enumerate(elem.value or []):
                _walk(item, ctx, mode, f"{path}[{index}]")
        elif mode == "dummy-all" and elem.VR in TEXT_VRS:
            _apply(ds, tag, elem, "D", mode, ctx, path)
        elif mode == "dummy" and tag not in CODE_TAGS and elem.VR in TEXT_VRS:
            _apply(ds, tag, elem, "D", mode, ctx, path)
        elif mode == "clean" and tag not in CODE_TAGS and elem.VR in TEXT_VRS:
            _apply(ds, tag, elem, "C", mode, ctx, path)


def _private(ds: Dataset, ctx: _Context, parent: str) -> None:
    """Private attributes: X, or C for the safe-private list (PS3.15 E.3.10)."""
    retain = Option.RETAIN_SAFE_PRIVATE in ctx.config.options
    creators: dict[tuple[int, int], str] = {}
    for elem in ds:
        if elem.tag.is_private and 0x10 <= elem.tag.element <= 0xFF:
            creators[(elem.tag.group, elem.tag.element)] = str(elem.value or "")
    used: set[tuple[int, int]] = set()
    for tag in [t for t in ds.keys() if t.is_private]:
        group, element = tag.group, tag.element
        if element <= 0xFF:
            continue
        creator = creators.get((group, element >> 8))
        if retain and creator is not None and ctx.config.safe_private.is_safe(
                creator, group, element):
            used.add((group, element >> 8))
            ctx.actions.append(ActionRecord(_path(parent, int(tag)), "C"))
        else:
            del ds[tag]
            ctx.actions.append(ActionRecord(_path(parent, int(tag)), "X"))
    for tag in [t for t in ds.keys() if t.is_private and t.element <= 0xFF]:
        if (tag.group, tag.element) not in used:
            del ds[tag]


def _overlay(ds: Dataset, group: int, action: str, ctx: _Context, path: str) -> None:
    """Overlay Data (60xx,3000): X drops the whole overlay group; C cleans it (E.3.3)."""
    if action == "C":
        ctx.actions.append(ActionRecord(path, "C"))
        for tag in [t for t in ds.keys() if t.group == group]:
            if ds[tag].VR in TEXT_VRS and ds[tag].VR not in ("CS", "IS", "DS"):
                _clean(ds[tag], ctx)
        if ctx.config.ocr and tesseract_available():
            _clean_overlay_text(ds, group)
        return
    for tag in [t for t in ds.keys() if t.group == group]:
        del ds[tag]
    ctx.actions.append(ActionRecord(path, "X"))


def _clean_overlay_text(ds: Dataset, group: int) -> None:
    from pydicom.pixels import pack_bits

    try:
        plane = np.array(ds.overlay_array(group), copy=True)
    except Exception:  # noqa: BLE001 - a malformed overlay is dropped, not kept
        for tag in [t for t in ds.keys() if t.group == group]:
            del ds[tag]
        return
    engine = OcrEngine()
    frames = plane if plane.ndim == 3 else plane[np.newaxis]
    for frame in frames:
        for x, y, w, h in engine.detect((frame > 0).astype(np.uint8) * 255):
            frame[y:y + h, x:x + w] = 0
    ds[(group << 16) | 0x3000].value = pack_bits(frames.reshape(-1))


# ---------------------------------------------------------------------------
# Marking (PS3.15 E.1.1 (6)), pixels, entry point.
# ---------------------------------------------------------------------------

def _mark(ds: Dataset, methods: list[MethodCode], config: DeidConfig, edition: str) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = ["dicomvault PS3.15 Basic Profile",
                                 f"Table E.1-1 {edition}"[:64]] + \
        [m.meaning[:64] for m in methods[1:]]
    items = []
    for m in methods:
        item = Dataset()
        item.CodeValue = m.value
        item.CodingSchemeDesignator = CODING_SCHEME
        item.CodeMeaning = m.meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    if Option.RETAIN_FULL_DATES in config.options:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    elif Option.RETAIN_MODIFIED_DATES in config.options:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"


def _file_meta(ds: Dataset, source: FileMetaDataset | None) -> None:
    meta = FileMetaDataset(source) if source is not None else FileMetaDataset()
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                    "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID",
                    "PrivateInformation", "SourcePresentationAddress",
                    "SendingPresentationAddress", "ReceivingPresentationAddress"):
        if keyword in meta:
            delattr(meta, keyword)
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "TransferSyntaxUID" not in meta:
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, little = getattr(ds, "original_encoding", (False, True))
        meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                  ExplicitVRLittleEndian if little is not False else
                                  ExplicitVRBigEndian)
    ds.file_meta = meta


def _ocr_detector(engine: OcrEngine) -> Callable[[np.ndarray, str], list[Box]]:
    def detect(frame: np.ndarray, photometric: str) -> list[Box]:
        return engine.detect(render_frame(frame, photometric))

    return detect


def deidentify(
    dataset: Dataset,
    config: DeidConfig,
    keys: PseudonymKeys | bytes,
    *,
    ocr_engine: OcrEngine | None = None,
) -> DeidResult:
    """De-identify a copy of ``dataset`` (PS3.15 Annex E Basic Profile + ``config.options``).

    Returns the new dataset, the pseudonym mapping records (empty when the
    project keeps none), the actions taken, the CID 7050 methods applied and
    the verification report; check ``result.released`` before using the output.
    """
    table = load_table()
    source = dataset
    ds = copy.deepcopy(dataset)
    meta = getattr(source, "file_meta", None)
    pseud = Pseudonymizer(keys, config.project, config.keep_mapping)
    patient_key = _patient_key(source)
    offset = (pseud.date_offset_days(patient_key)
              if Option.RETAIN_MODIFIED_DATES in config.options else None)
    ctx = _Context(table, config, pseud, IdentifierSet(), patient_key, offset)
    _collect(source, ctx)
    ctx.ids.finalize()

    _walk(ds, ctx, "table")

    methods = [BASIC_PROFILE]
    pixel_report = None
    has_pixels = PIXEL_DATA in ds
    _file_meta(ds, meta)
    want_pixels = Option.CLEAN_PIXEL_DATA in config.options
    want_visual = Option.CLEAN_VISUAL_FEATURES in config.options
    if has_pixels and (want_pixels or want_visual):
        engine = ocr_engine or OcrEngine()
        use_ocr = want_pixels and config.ocr
        if use_ocr and not tesseract_available():
            raise InvalidInputError("OCR requested but Tesseract is not installed")
        pixel_report = clean_pixel_data(
            ds, config.region_rules if want_pixels else _visual_only(config),
            _ocr_detector(engine) if use_ocr else None, visual_features=want_visual)
        if want_pixels:
            ds.BurnedInAnnotation = "NO"
    for option in sorted(config.options, key=lambda o: OPTION_CODES[o].value):
        if option is Option.CLEAN_PIXEL_DATA and not (has_pixels and pixel_report):
            continue
        if option is Option.CLEAN_VISUAL_FEATURES and not (
                pixel_report and pixel_report.visual_rules_applied):
            continue
        methods.append(OPTION_CODES[option])
    _mark(ds, methods, config, table.edition)

    report = (verify_output(ds, ctx.ids, config, ocr_engine=engine_for_verify(config, ocr_engine),
                            pixel_report=pixel_report, source=source)
              if config.verify else VerificationReport(findings=[], ocr_checked=False))
    return DeidResult(ds, pseud.records, ctx.actions, methods, report, pixel_report)


def _visual_only(config: DeidConfig) -> RegionRules:
    """Only the visual-features rules (Clean Recognizable Visual Features without Clean Pixel)."""
    return RegionRules(tuple(r for r in config.region_rules.rules if r.purpose != "text"))


def engine_for_verify(config: DeidConfig, ocr_engine: OcrEngine | None) -> OcrEngine | None:
    """The OCR engine of the verification: whenever Clean Pixel Data is selected (even with
    region rules only), so burned-in text the rules missed is caught before release."""
    if Option.CLEAN_PIXEL_DATA in config.options and tesseract_available():
        return ocr_engine or OcrEngine()
    return None
