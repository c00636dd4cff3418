"""Tamper-evident audit trail (DESIGN.md invariant 3, PS3.15 A.5)."""
