"""Kopf handlers: importing this package registers them (``quantwise run`` does).

- :mod:`~quantwise.handlers.cache`: Kopf's watches, kept as caches, and the wake-ups;
- :mod:`~quantwise.handlers.worker`: the worker threads that reconcile and write;
- :mod:`~quantwise.handlers.startup`: Kopf's settings, the threads' start and stop.
"""

from quantwise.handlers import cache, startup

__all__ = ["cache", "startup"]
