"""pynetdicom SCU helpers for the DIMSE door tests."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_context, build_role
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicomvault.dimse.raw_store import StoredInstance, send_stored_instance
from tests.integration.dimse.support import SERVER_AE, CertFiles, client_tls

QR_CONTEXTS = [Verification, PatientRootQueryRetrieveInformationModelFind,
               StudyRootQueryRetrieveInformationModelFind,
               PatientRootQueryRetrieveInformationModelMove,
               StudyRootQueryRetrieveInformationModelMove,
               PatientRootQueryRetrieveInformationModelGet,
               StudyRootQueryRetrieveInformationModelGet]


def connect(door: Any, ae_title: str = "SCU", client: str | None = "scu",
            contexts: Iterable[Any] | None = None, roles: Iterable[Any] = (),
            called: str = SERVER_AE, cert: CertFiles | None = None, max_pdu: int = 16382) -> Any:
    """Associate with the door over TLS as ``ae_title`` presenting the named client cert."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.maximum_pdu_size = max_pdu
    for cx in contexts if contexts is not None else [build_context(c) for c in QR_CONTEXTS]:
        ae.add_requested_context(str(cx.abstract_syntax), cx.transfer_syntax)
    certfiles = cert or (door.pki.clients[client] if client else None)
    return ae.associate("127.0.0.1", door.port, ae_title=called, ext_neg=list(roles),
                        tls_args=(client_tls(door.pki, certfiles), "localhost"))


def split_file(data: bytes) -> tuple[str, str, str, bytes]:
    """(transfer syntax, SOP class, SOP instance, dataset bytes) of a PS3.10 file."""
    from dicomvault.services.dicomfile import split_part10

    ts, dataset_bytes = split_part10(data)
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    # like real SCUs, name the instance by the data set's own UIDs (file meta as fallback)
    sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
    sop_instance = ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID")
    return ts, str(sop_class or ""), str(sop_instance or ""), dataset_bytes


def store_bytes(assoc: Any, sop_class: str, sop_instance: str, ts: str, data: bytes) -> int:
    """C-STORE the encoded dataset as-is; returns the response status (-1: none)."""
    rsp = send_stored_instance(assoc, StoredInstance(sop_class, sop_instance, ts, data))
    return int(rsp.Status) if "Status" in rsp else -1


def make_ct(encoding: Any = ExplicitVRLittleEndian, **attrs: Any) -> tuple[Dataset, bytes]:
    """A CT instance (pydicom's CT_small with fresh UIDs) and its encoded dataset bytes."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.SOPInstanceUID = attrs.pop("SOPInstanceUID", None) or generate_uid()
    ds.StudyInstanceUID = attrs.pop("StudyInstanceUID", None) or generate_uid()
    ds.SeriesInstanceUID = attrs.pop("SeriesInstanceUID", None) or generate_uid()
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.file_meta.TransferSyntaxUID = encoding
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    from dicomvault.services.dicomfile import split_part10

    return ds, split_part10(buf.getvalue())[1]


def store_ct_contexts() -> list[Any]:
    return [build_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]


def get_roles(sop_classes: Iterable[str]) -> list[Any]:
    return [build_role(uid, scp_role=True) for uid in sop_classes]
