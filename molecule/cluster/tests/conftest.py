from __future__ import annotations

import pytest
from nodes import node


@pytest.fixture
def box(host):
    """The molecule host under test, reached through podman (see nodes.py)."""
    return node(host.backend.get_hostname())
