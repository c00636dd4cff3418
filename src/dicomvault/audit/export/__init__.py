"""Standard renderings of audit records: DICOM XML, FHIR AuditEvent, syslog."""
