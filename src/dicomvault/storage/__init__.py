"""Blob stores: where encrypted instance envelopes live."""
