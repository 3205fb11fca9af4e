"""The scenarios' nodes, reached straight through `podman exec` (testinfra's
podman backend, ~0.2 s a command). testinfra's ansible backend has no fast
path for a podman connection and starts one `ansible` process per command
(seconds each on 2 busy cores)."""

from __future__ import annotations

import functools

import testinfra


@functools.cache
def node(name: str):
    return testinfra.get_host(f"podman://{name}")


@functools.cache
def address(name: str) -> str:
    """The node's cluster address: its only global IPv4 (podman's network)."""
    out = node(name).check_output("ip -4 -o addr show scope global")
    return out.split()[3].split("/")[0]
