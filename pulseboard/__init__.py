"""Pulseboard: live operational dashboards from a stream of application events."""

__version__ = "0.1.0"
