"""TLS contexts for DICOM over TLS (PS3.15 B.9, BCP195 / RFC 9325 profile).

Only TLS 1.2 or newer is negotiated (no fallback, RFC 8996), TLS 1.2 offers
only forward-secret AEAD suites (ECDHE/DHE with AES-GCM), never RSA key
exchange, CBC, SHA-1 MACs, RC4 or NULL; TLS 1.3 uses its AEAD suites.
Mutual TLS (ATNA ITI-19 Authenticate Node) is on when
``settings.dimse.require_client_cert`` is set.
"""

from __future__ import annotations

import hashlib
import ssl

from dicomvault.config import Settings
from dicomvault.errors import ConfigurationError

#: TLS 1.2 cipher suites of the BCP195 profile (RFC 9325 4.2): ECDHE/DHE + AES-GCM only.
BCP195_TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
))

_MIN_VERSION = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def _harden(ctx: ssl.SSLContext, settings: Settings) -> None:
    ctx.minimum_version = _MIN_VERSION[settings.tls.min_version]
    ctx.set_ciphers(BCP195_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    ctx.options |= ssl.OP_SINGLE_DH_USE


def _load_identity(ctx: ssl.SSLContext, settings: Settings) -> None:
    try:
        ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
        ctx.load_verify_locations(cafile=str(settings.tls_ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"tls: cannot load certificate, key or CA file ({type(exc).__name__})"
        ) from None


def server_context(settings: Settings) -> ssl.SSLContext:
    """The DICOM TLS listener's context (PS3.15 B.9 BCP195 profile, server side)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, settings)
    _load_identity(ctx, settings)
    # With mutual TLS off, a presented certificate is still verified (and can be pinned).
    ctx.verify_mode = ssl.CERT_REQUIRED if settings.dimse.require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(settings: Settings) -> ssl.SSLContext:
    """Context for our outgoing associations (C-MOVE sub-operations), BCP195 client side.

    Presents our certificate for mutual TLS and verifies the peer against the CA
    and its configured host name.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx, settings)
    _load_identity(ctx, settings)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def certificate_sha256(sock: object) -> str:
    """Hex SHA-256 of the peer's DER certificate, or "" when none was presented."""
    if not isinstance(sock, ssl.SSLSocket):
        return ""
    der = sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else ""
