"""Choosing each host's address inside the cluster network, with netaddr."""

from __future__ import annotations

from .errors import PlanError

try:
    import netaddr
except ImportError:  # pragma: no cover - exercised only on a broken controller
    netaddr = None


def cluster_network(cidr: object):
    """Parse pd_cluster_cidr into a netaddr.IPNetwork."""
    if netaddr is None:
        raise PlanError(
            "the planner needs the Python package netaddr on the controller: "
            "pip install -r requirements.txt"
        )
    if not cidr:
        raise PlanError("pd_cluster_cidr is not set; give the cluster network, e.g. '10.20.0.0/22'")
    try:
        network = netaddr.IPNetwork(str(cidr))
    except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
        raise PlanError(f"pd_cluster_cidr {cidr!r} is not a network in CIDR form ({exc})") from exc
    return network


def _as_ip(text: object):
    try:
        return netaddr.IPAddress(str(text))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None


def _usable(ip, network) -> bool:
    if ip not in network or str(ip) in ("0.0.0.0", "::"):
        return False
    # Network and broadcast addresses are not host addresses (except /31, /32).
    if network.version == 4 and network.prefixlen < 31:
        return ip not in (network.network, network.broadcast)
    return True


def pick_address(host: str, spec: dict, network) -> str:
    """Return the host's address in the cluster network.

    Order: pd_address (must be inside the network), then ansible_host when it
    is an IP inside it, then the first cached fact address inside it.
    """
    explicit = spec.get("address")
    if explicit:
        ip = _as_ip(explicit)
        if ip is None:
            raise PlanError(f"host {host}: pd_address {explicit!r} is not an IP address")
        if not _usable(ip, network):
            raise PlanError(
                f"host {host}: pd_address {explicit} is not a host address inside "
                f"pd_cluster_cidr {network}; workers never bind 0.0.0.0"
            )
        return str(ip)
    candidates = [spec.get("ansible_host"), *(spec.get("fact_addresses") or [])]
    for candidate in candidates:
        ip = _as_ip(candidate) if candidate else None
        if ip is not None and _usable(ip, network):
            return str(ip)
    seen = ", ".join(str(c) for c in candidates if c) or "none"
    raise PlanError(
        f"host {host} has no address in pd_cluster_cidr {network} (pd_address unset; "
        f"ansible_host and cached facts give: {seen}); set pd_address for it"
    )
