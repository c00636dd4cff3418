"""Test support for the DIMSE door: a test CA, certificates, settings and an in-process server.

Certificates come from ``dicomvault.crypto.pki`` when it exists, otherwise
from a small ``cryptography`` recipe here (RSA 2048, SAN localhost/127.0.0.1,
serverAuth + clientAuth so the archive can also act as a TLS client for
C-MOVE).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_AE = "DICOMVAULT"


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path

    @property
    def sha256(self) -> str:
        der = x509.load_pem_x509_certificate(self.cert.read_bytes()).public_bytes(
            serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class TestPki:
    ca: CertFiles
    server: CertFiles
    clients: dict[str, CertFiles]
    #: A certificate from a different, untrusted CA.
    rogue: CertFiles


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> CertFiles:
    path.mkdir(parents=True, exist_ok=True)
    c, k = path / "cert.pem", path / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()))
    k.chmod(0o600)
    return CertFiles(c, k)


def _ca(cn: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: tuple[x509.Certificate, rsa.RSAPrivateKey], cn: str) -> tuple[
        x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca[0].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca[1], hashes.SHA256()))
    return cert, key


def make_pki(root: Path, client_names: tuple[str, ...] = ("scu", "other")) -> TestPki:
    """A CA, a server certificate and client certificates under ``root``."""
    ca = _ca("dicomvault test CA")
    ca_files = _write(root / "ca", *ca)
    server = _write(root / "server", *_leaf(ca, "localhost"))
    clients = {name: _write(root / name, *_leaf(ca, name)) for name in client_names}
    rogue_ca = _ca("rogue CA")
    rogue = _write(root / "rogue", *_leaf(rogue_ca, "rogue"))
    return TestPki(ca_files, server, clients, rogue)


def client_tls(pki: TestPki, client: CertFiles | None) -> ssl.SSLContext:
    """A client context trusting the test CA and presenting ``client`` (if any)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca.cert))
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, data_dir: Path, pki: TestPki, *, port: int = 0, plain_port: int = 0,
                 db_url: str = "", peers: str = "", extra: str = "") -> Path:
    """A TOML config for a test instance (keys, TLS files, peers)."""
    text = f"""
data_dir = {toml_quote(str(data_dir))}

[dimse]
ae_title = "{SERVER_AE}"
host = "127.0.0.1"
port = {port}
plain_port = {plain_port}
max_pdu = 65536
acse_timeout = 30
dimse_timeout = 30
network_timeout = 30

[tls]
cert_file = {toml_quote(str(pki.server.cert))}
key_file = {toml_quote(str(pki.server.key))}
ca_file = {toml_quote(str(pki.ca.cert))}

[database]
url = {toml_quote(db_url)}
{extra}
{peers}
"""
    path.write_text(text, encoding="utf-8")
    return path


def peer_toml(ae_title: str, **fields: object) -> str:
    lines = ["[[peers]]", f"ae_title = {toml_quote(ae_title)}"]
    for key, value in fields.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        elif isinstance(value, tuple | list):
            lines.append(f"{key} = [{', '.join(toml_quote(str(v)) for v in value)}]")
        else:
            lines.append(f"{key} = {toml_quote(str(value))}")
    return "\n".join(lines) + "\n"
