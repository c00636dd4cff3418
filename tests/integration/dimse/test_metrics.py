"""DIMSE activity shows up in the Prometheus metrics, with no PHI in any label."""

from __future__ import annotations

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.sop_class import CTImageStorage

from tests.integration.dimse.scu import connect, make_ct, store_bytes


def test_store_and_association_counted_without_phi(door):
    ds, data = make_ct(PatientName="Metricsonly^Phiname")
    assoc = connect(door, contexts=[build_context(CTImageStorage, [ExplicitVRLittleEndian])])
    assert store_bytes(assoc, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian, data) == 0
    assoc.release()
    body, _ctype = door.services.metrics.render()
    text = body.decode()
    assert 'dicomvault_dimse_requests_total{service="store",status="0000"} 1.0' in text
    assert 'result="accepted"' in text
    assert "dicomvault_stored_instances_total 1.0" in text
    assert "Metricsonly" not in text and ds.StudyInstanceUID not in text
