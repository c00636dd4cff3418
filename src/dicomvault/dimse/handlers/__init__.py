"""Thin DIMSE handlers: translate DIMSE messages to the service API and back."""
