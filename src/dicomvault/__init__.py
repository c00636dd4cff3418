"""dicomvault: a secure, compliance-first DICOM archive."""

__version__ = "0.1.0"
