"""Shared by every scenario's testinfra tests: molecule hands testinfra
`ansible://` hosts; each test gets the same node through podman instead
(see nodes.py). Test ids keep molecule's host names."""

from __future__ import annotations

import pytest
from nodes import node


@pytest.fixture(scope="module")
def host(_testinfra_host):
    return node(_testinfra_host.backend.get_hostname())
