"""The busiest DICOMweb GET routes, dispatched without FastAPI's per-request machinery.

QIDO-RS searches and WADO-RS instance, frame and metadata retrieves are
most of a viewer's traffic.  Through FastAPI each of them pays for route
matching, dependency solving and two thread-pool round trips (one for the
principal, one for the endpoint) before any work; measured on a QIDO-RS
search here, that was about 0.5 ms of 4–5 ms (docs/performance.md).

``HotRoutes`` is the innermost middleware.  For a GET that matches one of
these routes it does what FastAPI would, in one thread-pool call:

* the same ``APIRoute`` objects give the path patterns (the OpenAPI document
  is unchanged, and so is the route's template in the metrics);
* each path parameter is checked like the route's own annotation checks it
  (``StudyUid`` etc.); a parameter that fails goes to FastAPI, whose answer
  (400 problem+json) is the reference;
* the principal comes from the same ``current_principal`` dependency, the
  services from ``get_services``, and then the same endpoint function runs;
* an exception goes to the handler the application registered for it
  (``web/problems.py``), exactly as FastAPI's exception middleware would.

Everything else (other methods and paths, trailing slashes, a ``root_path``)
goes through FastAPI unchanged.  ``hot_routes`` refuses, at start-up, an
endpoint that takes anything this module does not supply, so a parameter
added to one of these endpoints later cannot be silently ignored here.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import NoMatchFound
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomvault.web.deps import CurrentPrincipal, ServicesDep, current_principal, get_services
from dicomvault.web.routers import qido, wado
from dicomvault.web.routers.common import UID_PATTERN, InstanceUid, SeriesUid, StudyUid

#: The endpoints served here: QIDO-RS at every level, WADO-RS instances, frames, metadata.
HOT_ENDPOINTS: tuple[Callable[..., Response], ...] = (
    qido.search_studies, qido.search_all_series, qido.search_all_instances, qido.search_series,
    qido.search_study_instances, qido.search_series_instances,
    wado.retrieve_study, wado.retrieve_series, wado.retrieve_instance, wado.retrieve_frames,
    wado.study_metadata, wado.series_metadata, wado.instance_metadata,
)

_UID = re.compile(UID_PATTERN)
_UID_MAX = 64


def _uid(value: str) -> bool:
    return len(value) <= _UID_MAX and _UID.match(value) is not None


#: Path parameters this module can check, by the annotation the route declares.
_CHECKS: list[tuple[Any, Callable[[str], bool]]] = [
    (StudyUid, _uid), (SeriesUid, _uid), (InstanceUid, _uid),
    (str, lambda _value: True),  # checked by the endpoint itself (e.g. the frame list)
]
#: Parameters supplied here rather than by the path, with the annotation each must have.
_INJECTED: dict[str, Any] = {"request": Request, "services": ServicesDep, "principal": CurrentPrincipal}


@dataclass(frozen=True)
class HotRoute:
    """One hot route: its FastAPI route, endpoint and path-parameter checks."""

    route: APIRoute
    checks: tuple[tuple[str, Callable[[str], bool]], ...]

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters if ``path`` is this route's and every one passes its check."""
        found = self.route.path_regex.match(path)
        if found is None:
            return None
        params = found.groupdict()
        for name, check in self.checks:
            if not check(params[name]):
                return None
        return params


def hot_routes(app: FastAPI, routers: tuple[APIRouter, ...] = (qido.router, wado.router)
               ) -> list[HotRoute]:
    """The routes of ``HOT_ENDPOINTS`` (declared in ``routers``), each checked to be served
    by ``app`` at the path it declares and to take only the request, the services, the
    principal and path parameters of a kind checked here."""
    by_endpoint: dict[Callable[..., Any], APIRoute] = {}
    for router in routers:
        for candidate in router.routes:
            if isinstance(candidate, APIRoute) and candidate.endpoint in HOT_ENDPOINTS:
                by_endpoint.setdefault(candidate.endpoint, candidate)
    found: list[HotRoute] = []
    for endpoint in HOT_ENDPOINTS:
        route = by_endpoint.get(endpoint)
        if route is None:
            raise RuntimeError(f"hot endpoint {endpoint.__name__} is not routed")
        checks = _checks(route)
        sample = {name: "1.2" for name, _check in checks}
        try:
            served = app.url_path_for(route.name, **sample)
        except NoMatchFound:
            served = None
        if served != route.path_format.format(**sample):
            raise RuntimeError(f"{route.path}: the application does not serve this route at its path")
        found.append(HotRoute(route, checks))
    return found


def _checks(route: APIRoute) -> tuple[tuple[str, Callable[[str], bool]], ...]:
    where = f"{route.path} ({route.endpoint.__name__})"
    if route.methods != {"GET"} or route.dependencies or route.path_format != route.path:
        raise RuntimeError(f"{where}: a hot route is a plain GET without route dependencies")
    hints = typing.get_type_hints(route.endpoint, include_extras=True)
    checks = []
    for name in inspect.signature(route.endpoint).parameters:
        if name in _INJECTED:
            if hints.get(name) != _INJECTED[name]:
                raise RuntimeError(f"{where}: parameter {name!r} is not the {name} this module supplies")
            continue
        if name not in route.param_convertors:
            raise RuntimeError(f"{where}: parameter {name!r} is neither a path parameter nor injected here")
        check = next((c for kind, c in _CHECKS if hints.get(name) == kind), None)
        if check is None:
            raise RuntimeError(f"{where}: path parameter {name!r} has an annotation this module cannot check")
        checks.append((name, check))
    return tuple(checks)


class HotRoutes:
    """ASGI middleware serving ``HOT_ENDPOINTS`` directly (see the module docstring)."""

    def __init__(self, app: ASGIApp, routes: list[HotRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        for hot in self.routes:
            params = hot.match(path)
            if params is not None:
                break
        else:
            await self.app(scope, receive, send)
            return
        route = hot.route
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, params
        request = Request(scope, receive)
        services = await get_services(request)

        def call() -> Response:
            principal = current_principal(request, services)
            response: Response = route.endpoint(request=request, services=services, principal=principal,
                                                **params)
            return response

        try:
            response = await run_in_threadpool(call)
        except Exception as exc:
            handler = _exception_handler(scope["app"], exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _exception_handler(app: FastAPI, exc: Exception
                       ) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    """The handler ``app`` registered for ``exc``'s class or its nearest base (as Starlette)."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:  # Starlette gives that one to its outermost error middleware
            return None
        handler = handlers.get(cls)
        if handler is not None:
            if not inspect.iscoroutinefunction(handler):
                sync = typing.cast(Callable[[Request, Exception], Response], handler)
                return lambda request, error: run_in_threadpool(sync, request, error)
            return typing.cast(Callable[[Request, Exception], Awaitable[Response]], handler)
    return None
