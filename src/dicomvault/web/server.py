"""``WebServer``: uvicorn serving ``create_app`` over HTTPS in a background thread.

TLS per the BCP195 profile (RFC 9325): TLS 1.2+ only (no fallback, RFC 8996),
TLS 1.2 suites ECDHE/DHE + AES-GCM only, TLS 1.3 AEAD suites; optional mutual
TLS (``http.require_client_cert``) against the local CA.  Port 0 binds a free
port, reported by ``.port``.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time

import uvicorn

from dicomvault.errors import ConfigurationError, UnavailableError
from dicomvault.services.context import Services
from dicomvault.web.app import create_app

#: TLS 1.2 cipher suites of the BCP195 profile (RFC 9325 4.2).
BCP195_TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
))
_MIN_VERSION = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def tls_context(services: Services) -> ssl.SSLContext:
    """Server-side context (BCP195); client certificates required when configured."""
    settings = services.settings
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _MIN_VERSION[settings.tls.min_version]
    ctx.set_ciphers(BCP195_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
        if settings.http.require_client_cert:
            ctx.load_verify_locations(cafile=str(settings.tls_ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"tls: cannot load certificate, key or CA file ({type(exc).__name__})") from None
    ctx.verify_mode = ssl.CERT_REQUIRED if settings.http.require_client_cert else ssl.CERT_NONE
    return ctx


class WebServer:
    """Start/stop the HTTPS listener beside DIMSE (``cli.runtime.run_server``)."""

    def __init__(self, services: Services, *, host: str | None = None, port: int | None = None) -> None:
        self.services = services
        http = services.settings.http
        self.host = host or http.host
        self._requested_port = http.port if port is None else port
        self.port = 0
        secret_env = services.settings.oidc.client_secret_env
        secret = os.environ.get(secret_env, "") if services.settings.oidc.enabled and secret_env else ""
        self.app = create_app(services, oidc_client_secret=secret)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Bind, then serve in a daemon thread; returns once the server accepts connections."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(512)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                                access_log=False, lifespan="off", server_header=False,
                                date_header=True, http="httptools", loop="uvloop",
                                timeout_keep_alive=30, h11_max_incomplete_event_size=64 * 1024,
                                limit_concurrency=1024)
        config.load()
        config.ssl = tls_context(self.services)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="dicomvault-https", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise UnavailableError("the HTTPS listener did not start")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, finish in-flight requests (up to ``timeout``), join the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout)
        self._server = None
        self._thread = None
