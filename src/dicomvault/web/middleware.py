"""Pure-ASGI middleware: security headers, request-size limit, request metrics.

Pure ASGI (no ``BaseHTTPMiddleware``) so streamed responses pass through
untouched and chunked uploads are counted as they arrive.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomvault.web.problems import PROBLEM_JSON, PayloadTooLargeError

#: Default policy for every response; a route may replace it via ``request.state.csp``.
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
HSTS = "max-age=63072000; includeSubDomains"
DICOMWEB_PREFIX = "/dicomweb"


def _state(scope: Scope) -> dict[str, Any]:
    state = scope.setdefault("state", {})
    return state if isinstance(state, dict) else {}


class SecurityHeadersMiddleware:
    """HSTS, CSP, nosniff, frame-ancestors, Referrer-Policy, no-store (OWASP secure headers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _state(scope)
        path: str = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Strict-Transport-Security"] = HSTS
                headers["Content-Security-Policy"] = str(state.get("csp") or DEFAULT_CSP)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                if path.startswith(DICOMWEB_PREFIX):
                    headers["Cross-Origin-Resource-Policy"] = "same-origin"
                if state.get("cross_origin_isolation"):
                    headers["Cross-Origin-Opener-Policy"] = "same-origin"
                    headers["Cross-Origin-Embedder-Policy"] = "require-corp"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while a chunked body streams."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                    await _reject(send, 400, "invalid Content-Length", "invalid-input")
                    return
                if too_big:
                    await _reject(send, 413, "request body too large", PayloadTooLargeError.code)
                    return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLargeError("request body too large")
            return message

        await self.app(scope, counting_receive, send)


async def _reject(send: Send, status: int, detail: str, code: str) -> None:
    body = json.dumps({"type": f"urn:dicomvault:problem:{code}", "status": status,
                       "title": "Content Too Large" if status == 413 else "Bad Request",
                       "detail": detail, "code": code}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM_JSON.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Count requests and latency per *route template* (never the raw path: no UIDs, no PHI)."""

    def __init__(self, app: ASGIApp, metrics: Any) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.metrics is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            self.metrics.http_request(scope.get("method", "GET"), str(template), status,
                                      time.perf_counter() - start)


class IncidentMiddleware:
    """Turn any unhandled exception into a 500 problem with an opaque incident id.

    Only the exception's type name is logged (its message could carry dataset
    values); nothing is re-raised, so no traceback reaches the server log.  If
    the response had already started (a stream failing midway), the
    connection is simply ended.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence; see the docstring
            from dicomvault.web.problems import incident_response

            response = incident_response(exc)
            if not started:
                await response(scope, receive, send)
