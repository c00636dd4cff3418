"""C-GET SCP (PS3.4 C.4.3): sub-operations on the same association (SCP/SCU role selection)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dicomvault.dimse.handlers._retrieve import RetrievePlan, instances, record


def handle_get(event: Any, services: Any) -> Iterator[Any]:
    """Yield the sub-operation count, then each stored instance byte-identical."""
    plan: RetrievePlan = event.assoc.dv_plans.pop(event.request.MessageID)
    yield len(plan.refs)
    yield from instances(plan, services, event)
    if plan.refs:
        peer = getattr(event.assoc, "dv_peer", None)
        record(plan, services, event, peer.ae_title if peer is not None else "")
