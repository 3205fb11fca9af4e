"""Per-host firewall rules from the plan (the firewall role renders them as nftables).

Every port the plan claims on a host (plan["hosts"][host]["ports"], the one
port list ports.py builds) gets a scope:

- cluster: workers' HTTP (router, Prometheus), NIXL side channels, data-parallel
  RPC, P2pNccl kv ports, dcgm-exporter, the router's metrics and discovery
  ports, Ray's internal ports: only from pd_cluster_cidr;
- client: the router's OpenAI API (and Ray Serve's HTTP proxy): from the client
  networks, and the cluster network (front door, checks);
- admin: Prometheus, Grafana (and the Ray dashboard): only from the admin networks.

Serving hosts also accept everything from each other (the plan's prefill and
decode addresses): NCCL, Gloo, UCX over TCP and vLLM's data-parallel ZMQ
sockets listen on ephemeral ports that no plan can list (RDMA traffic does not
cross netfilter at all). A claim of an unknown kind raises: a new listener
must be given a scope here before it is deployed.
"""

from __future__ import annotations

from .errors import PlanError

SCOPES = ("cluster", "client", "admin")

# Owner texts ports.py and rayserve.py write, by suffix or exact name.
_CLUSTER_SUFFIXES = (" http", " nixl side channel", " data-parallel rpc", " p2p nccl kv_port")
_EXACT = {
    "dcgm-exporter": "cluster",
    "router metrics": "cluster",
    "router discovery": "cluster",
    "router api": "client",
    "prometheus": "admin",
    "grafana": "admin",
    "ray serve_port": "client",
    "ray dashboard_port": "admin",
    "ray worker process": "cluster",
}


def scope_of(owner: str) -> str:
    if owner in _EXACT:
        return _EXACT[owner]
    if owner.endswith(_CLUSTER_SUFFIXES) or owner.startswith("ray "):
        return "cluster"
    raise ValueError(f"port owner {owner!r} has no firewall scope: add it to pd_planner/firewall.py")


def _ranges(ports: list[int]) -> list[str]:
    """[5600, 5601, 5602, 8100] -> ['5600-5602', '8100']."""
    out: list[str] = []
    for port in sorted(set(ports)):
        if out and "-" not in out[-1] and int(out[-1]) == port - 1:
            out[-1] = f"{out[-1]}-{port}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == port - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{port}"
        else:
            out.append(str(port))
    return out


def _split(networks, variable: str) -> dict[str, list[str]]:
    """Networks by family, checked with netaddr (names the role variable)."""
    import netaddr

    if isinstance(networks, str) or not isinstance(networks, (list, tuple)):
        raise PlanError(f"{variable} is {networks!r}; valid: a list of networks in CIDR form, e.g. ['10.1.0.0/24']")
    families: dict[str, list[str]] = {"ip": [], "ip6": []}
    for item in networks:
        try:
            net = netaddr.IPNetwork(str(item))
        except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
            raise PlanError(f"{variable} has {item!r}, which is not a network in CIDR form ({exc}); "
                            "valid: e.g. '192.168.10.0/24' or '2001:db8::/64'") from exc
        families["ip" if net.version == 4 else "ip6"].append(net.cidr)
    return {family: _merge(nets) for family, nets in families.items()}


def _merge(networks) -> list[str]:
    """Overlapping networks merged (an nftables interval set refuses overlaps)."""
    import netaddr

    return [str(net) for net in netaddr.cidr_merge([netaddr.IPNetwork(str(n)) for n in networks])]


def host_rules(plan: dict, host: str, admin_networks, client_networks, extra=()) -> dict:
    """What the host accepts, by scope, with the source networks of each scope."""
    hosts = plan.get("hosts") or {}
    # A host outside the plan (a front door only) has no planned listener.
    entry = hosts.get(host) or {"address": None, "ports": [], "groups": []}
    ports: dict[str, list[int]] = {scope: [] for scope in SCOPES}
    owners: dict[str, list[str]] = {scope: [] for scope in SCOPES}
    for claim in entry.get("ports") or []:
        scope = scope_of(claim["owner"])
        ports[scope].append(int(claim["port"]))
        owners[scope].append(claim["owner"])
    serving = sorted({h["address"] for h in hosts.values()
                      if {"prefill", "decode"} & set(h.get("groups") or []) and h.get("address")})
    is_serving = bool({"prefill", "decode"} & set(entry.get("groups") or []))
    cluster = _split([plan["cluster_cidr"]], "pd_cluster_cidr")
    extra_rules = []
    for i, rule in enumerate(extra or []):
        variable = f"firewall_allow[{i}]"
        if not isinstance(rule, dict) or set(rule) - {"port", "proto", "sources", "comment"} or "port" not in rule:
            raise PlanError(f"{variable} is {rule!r}; valid: a mapping with port (1-65535 or 'LOW-HIGH'), "
                            "proto (tcp or udp, default tcp), sources (list of networks) and comment")
        port = str(rule["port"])
        bounds = port.split("-")
        if not all(b.isdigit() and 1 <= int(b) <= 65535 for b in bounds) or len(bounds) > 2:
            raise PlanError(f"{variable}.port is {rule['port']!r}; valid: a port 1-65535 or a range 'LOW-HIGH'")
        proto = rule.get("proto", "tcp")
        if proto not in ("tcp", "udp"):
            raise PlanError(f"{variable}.proto is {proto!r}; valid: tcp, udp")
        extra_rules.append({"port": port, "proto": proto, "comment": str(rule.get("comment", ""))[:100],
                            "sources": _split(rule.get("sources", []), f"{variable}.sources")})
    return {
        "host": host,
        "address": entry.get("address"),
        "ports": {scope: _ranges(p) for scope, p in ports.items()},
        "owners": {scope: sorted(set(o)) for scope, o in owners.items()},
        "sources": {
            "cluster": cluster,
            "client": {f: _merge([*cluster[f], *n]) for f, n in
                       _split(client_networks, "firewall_client_networks").items()},
            "admin": _split(admin_networks, "firewall_admin_networks"),
        },
        # Serving hosts: every other serving host, any port (ephemeral NCCL/UCX/Gloo/ZMQ).
        "peers": [a for a in serving if a != entry.get("address")] if is_serving else [],
        "extra": extra_rules,
    }
