"""Choosing each host's address inside the cluster network, with netaddr.

IPv4 only. IPv6 is refused with a clear message rather than half supported:
every URL the plan writes (worker and router URLs, scrape targets, the NIXL
side channel, the data-parallel master address, IMEX node lists) would need
brackets, and vLLM's --host, vllm-router's worker URLs and the lab's podman
network have never been exercised with IPv6 here.
"""

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
    if network.ip != network.network:
        raise PlanError(
            f"pd_cluster_cidr {cidr!r} has host bits set; valid: the network address, "
            f"did you mean '{network.cidr}'?"
        )
    if network.version != 4:
        raise PlanError(
            f"pd_cluster_cidr {cidr!r} is an IPv6 network; the planner lays out IPv4 cluster networks only "
            "(an IPv4 CIDR such as '10.20.0.0/22')"
        )
    return network


# Networks that are not reachable from the internet: RFC 1918 private
# ranges, RFC 6598 shared address space (carrier-grade NAT), and loopback
# (one machine checked as several inventory hosts, e.g. the read-only check's
# fixture tests/fixtures/nvidia/one-gpu-inventory.yml).
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8")
LOOPBACK = "127.0.0.0/8"


def check_private(network, allowed: bool) -> None:
    """Refuse a cluster network with publicly routable addresses unless
    `allowed` (pd_plan_allow_public_network): workers' HTTP, NIXL and DP ports
    have no authentication of their own."""
    if allowed or any(network in netaddr.IPNetwork(private) for private in PRIVATE_NETWORKS):
        return
    raise PlanError(
        f"pd_cluster_cidr {network} is not a private network; workers' HTTP, NIXL and data-parallel ports "
        f"are open to it unauthenticated. Use a network inside {', '.join(PRIVATE_NETWORKS)}, "
        "or set pd_plan_allow_public_network: true if it is firewalled from the internet"
    )


def check_unique(addresses: dict) -> None:
    """Every host its own cluster address (URLs, scrape targets and IMEX
    node lists would otherwise point two hosts at one machine)."""
    seen: dict[str, str] = {}
    for host, address in addresses.items():
        # Inventory hosts sharing a loopback address are one machine on
        # purpose (local check runs), not a copied address.
        if netaddr.IPAddress(address) in netaddr.IPNetwork(LOOPBACK):
            continue
        if address in seen:
            raise PlanError(
                f"hosts {seen[address]} and {host} both have the cluster address {address} "
                "(pd_address, else ansible_host or facts); every host needs its own address in pd_cluster_cidr: "
                f"set a distinct pd_address for {host}"
            )
        seen[address] = host


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
            raise PlanError(f"host {host}: pd_address {explicit!r} is not an IP address; expected an IPv4 "
                            f"address inside pd_cluster_cidr {network}")
        if ip.version != 4:
            raise PlanError(f"host {host}: pd_address {explicit} is IPv6; the planner lays out IPv4 only: "
                            f"give an IPv4 address inside pd_cluster_cidr {network}")
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
