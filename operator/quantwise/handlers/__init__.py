"""Kopf handlers: importing this package registers them (``quantwise run`` does)."""

from quantwise.handlers import models, startup

__all__ = ["models", "startup"]
