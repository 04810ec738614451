"""Pulseboard: live operational dashboards from a stream of application events."""

from pulseboard.client import Client

__all__ = ["Client"]
__version__ = "0.1.0"
