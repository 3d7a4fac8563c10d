"""The quantwise operator as the component tests run it: its handlers plus a test login."""

from __future__ import annotations

import os
from typing import Any

import kopf

import quantwise.handlers  # noqa: F401  - registers the operator's handlers


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Connect to the kmock server the test started."""
    return kopf.ConnectionInfo(server=os.environ["QUANTWISE_KUBE_SERVER"], insecure=True)


@kopf.on.startup()
def component_settings(settings: kopf.OperatorSettings, **_: Any) -> None:
    """kmock answers 500 to namespace listing (TESTING.md): do not scan namespaces."""
    settings.scanning.disabled = True
    settings.watching.server_timeout = 10
