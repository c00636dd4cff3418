"""The HTTPS listener: TLS 1.2+ with BCP195 suites only, optional mutual TLS (RFC 9325, RFC 8996)."""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.integration.dimse.support import client_tls
from tests.interop.dicomweb_client.conftest import start_server


@pytest.fixture
def server(tmp_path, db_url, keyring, web_pki):
    yield from start_server(tmp_path, db_url, keyring, web_pki)


@pytest.fixture
def mtls_server(tmp_path, db_url, keyring, web_pki):
    yield from start_server(tmp_path, db_url, keyring, web_pki, DICOMVAULT_HTTP__REQUIRE_CLIENT_CERT="true")


def _handshake(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def _get(sock: ssl.SSLSocket, path: str = "/healthz") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_are_refused(server, web_pki, version):
    ctx = client_tls(web_pki, None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = version
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _handshake(server.port, ctx)


@pytest.mark.parametrize("ciphers", ["AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA",
                                     "ECDHE-RSA-CHACHA20-POLY1305"])
def test_non_bcp195_tls12_suites_are_refused(server, web_pki, ciphers):
    ctx = client_tls(web_pki, None)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    with pytest.raises(ssl.SSLError):
        _handshake(server.port, ctx)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls12_and_13_serve_with_security_headers(server, web_pki, version):
    ctx = client_tls(web_pki, None)
    ctx.minimum_version = ctx.maximum_version = version
    with _handshake(server.port, ctx) as sock:
        assert sock.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        if version == ssl.TLSVersion.TLSv1_2:
            assert "GCM" in sock.cipher()[0] and "ECDHE" in sock.cipher()[0]
        response = _get(sock)
    assert response.startswith(b"HTTP/1.1 200")
    assert b"strict-transport-security: max-age=63072000" in response.lower()


def _served(port: int, ctx: ssl.SSLContext) -> bool:
    """Whether a request over a fresh connection is answered (TLS 1.3 refuses after the handshake)."""
    try:
        with _handshake(port, ctx) as sock:
            return _get(sock).startswith(b"HTTP/1.1 200")
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return False


def test_mutual_tls_requires_a_trusted_client_certificate(mtls_server, web_pki):
    assert not _served(mtls_server.port, client_tls(web_pki, None))
    assert not _served(mtls_server.port, client_tls(web_pki, web_pki.rogue))
    assert _served(mtls_server.port, client_tls(web_pki, web_pki.clients["client"]))
