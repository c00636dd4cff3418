"""C-MOVE SCP (PS3.4 C.4.2): sub-operations on a new association to a configured peer.

The plan (destination, located instances) was made when the request arrived
(``_retrieve.plan_retrieve``); this handler opens the association to the
destination (TLS when the peer is configured for it) proposing exactly the
stored SOP class / transfer syntax pairs, and sends the stored bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pynetdicom.presentation import build_context

from dicomvault.dimse.handlers._retrieve import RetrievePlan, instances, record

#: PS3.8 9.3.2.2: at most 128 presentation contexts per association.
MAX_CONTEXTS = 128


def destination_contexts(plan: RetrievePlan) -> list[Any]:
    """One presentation context per (SOP class, stored transfer syntax) pair."""
    pairs = sorted({(r.sop_class_uid, r.transfer_syntax_uid) for r in plan.refs})
    return [build_context(sop_class, [ts]) for sop_class, ts in pairs[:MAX_CONTEXTS]]


def handle_move(event: Any, services: Any, client_tls: Any) -> Iterator[Any]:
    """Yield the destination, the sub-operation count, then each instance (pynetdicom protocol)."""
    plan: RetrievePlan = event.assoc.dv_plans.pop(event.request.MessageID)
    dest = plan.destination
    assert dest is not None  # noqa: S101 - plan_retrieve sets it for C-MOVE
    kwargs: dict[str, Any] = {"contexts": destination_contexts(plan) or None}
    if dest.tls:
        kwargs["tls_args"] = (client_tls(), dest.host)
    yield dest.host, dest.port, kwargs
    yield len(plan.refs)
    yield from instances(plan, services, event)
    if plan.refs:
        record(plan, services, event, dest.ae_title)
