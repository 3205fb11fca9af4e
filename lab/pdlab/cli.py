"""The lab's commands (lab/labctl.py is the entry point).

    labctl.py up [--prefill N] [--decode M]   build what is missing, start nodes, run site.yml
    labctl.py up --shape wide                  the same with inventories/lab-wide: prefill as one DP2
                                               instance on two nodes (leader + headless follower)
    labctl.py nodes [--prefill N] [--decode M] [--shape S]  only build and start the nodes
    labctl.py assets                           only build image, wheelhouse and model (molecule)
    labctl.py destroy                          remove nodes and the network
    labctl.py watch-pollers NODE...            keep NIXL pollers on a small CPU share while the nodes exist
    labctl.py status
    labctl.py inventory-args [--prefill N] [--decode M] [--shape S]   site.yml's -i arguments for a shape
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from . import image, inventory, nodes, pollers, probes
from .shell import ENV, LABEL, ROOT, STATE, podman, step


def converge(lab: inventory.Lab, prefill: int, decode: int, retiring: list[str] | None = None) -> int:
    started = time.monotonic()
    args = inventory.inventory_args(prefill, decode, retiring, lab.shape)
    step(f"running playbooks/site.yml ({' '.join(args)})")
    playbook = Path(sys.executable).parent / "ansible-playbook"
    vllm_nodes = [name for name in lab.hosts(prefill, decode) if name != lab.ctl.name]
    with pollers.PollerWatch(vllm_nodes):
        result = subprocess.run([str(playbook), str(ROOT / "playbooks" / "site.yml"), *args], env=ENV,
                                cwd=ROOT, check=False)
    step(f"site.yml finished in {time.monotonic() - started:.0f} s (rc {result.returncode})")
    return result.returncode


def destroy() -> None:
    """Every labelled node and the network; needs no inventory (any shape goes)."""
    nodes.remove_nodes(nodes.running_nodes(), grace=10)
    nodes.remove_network()
    scale = STATE / "inventory" / "scale.yml"
    if scale.exists():
        scale.unlink()
    pollers.remove_poller_cgroup()
    step("lab removed (image, wheelhouse and model kept in .lab/)")


def assets(lab: inventory.Lab) -> None:
    image.ensure_host_packages()
    image.ensure_wheelhouse()
    image.ensure_model(lab.model_dir)


def up(lab: inventory.Lab, prefill: int, decode: int, started: float) -> int:
    retiring = nodes.converge_nodes(lab, prefill, decode)
    vllm_nodes = [name for name in lab.hosts(prefill, decode) if name != lab.ctl.name]
    # Running instances' pollers (restarted ones start a new thread).
    pollers.deprioritize_nixl_pollers([name for name in nodes.running_nodes() if name != lab.ctl.name])
    rc = converge(lab, prefill, decode, retiring)
    if rc:
        pollers.serve_with_nixl_pollers()  # what still runs keeps serving at full speed
        return rc
    if retiring:
        nodes.remove_nodes(retiring)
        inventory.inventory_args(prefill, decode, shape=lab.shape)
    pollers.deprioritize_nixl_pollers(vllm_nodes)
    pollers.serve_with_nixl_pollers()
    shape = (f"shape {lab.shape}: " + ", ".join(sorted(n for n in lab.hosts(prefill, decode) if n != lab.ctl.name))
             if lab.fixed else f"{prefill} prefill, {decode} decode")
    step(f"lab converged in {time.monotonic() - started:.0f} s: {shape}")
    probes.first_completion(lab, started)
    probes.prometheus_report(lab)
    print("  nodes:      podman ps --filter label=" + LABEL)
    print(f"  router API: http://127.0.0.1:{lab.router_port}/v1")
    print(f"  Prometheus: http://127.0.0.1:{lab.prometheus_port} (rules: pool:vllm_tokens_per_gpu:rate1m, ...)")
    print("  verify:     .venv/bin/ansible-playbook playbooks/verify.yml "
          + " ".join(inventory.inventory_args(prefill, decode, shape=lab.shape)))
    return 0


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description="vllm-pd-ansible lab")
    cli.add_argument("command", choices=("up", "nodes", "assets", "destroy", "status", "inventory-args",
                                         "watch-pollers"))
    cli.add_argument("nodes", nargs="*", help="watch-pollers: the node (container) names")
    cli.add_argument("--prefill", type=int, default=1)
    cli.add_argument("--decode", type=int, default=1)
    cli.add_argument("--shape", choices=tuple(inventory.SHAPES), default="default",
                     help="default: inventories/lab (scaled by --prefill/--decode); wide: plus inventories/lab-wide")
    opts = cli.parse_args(argv)
    if opts.command == "watch-pollers":
        return pollers.watch_pollers(opts.nodes)
    if opts.prefill < 1 or opts.decode < 1:
        cli.error("--prefill and --decode must be at least 1")
    if opts.command == "destroy":
        destroy()
        return 0
    if opts.command == "status":
        print(podman("ps", "-a", "--filter", f"label={LABEL}").stdout)
        return 0
    lab = inventory.load(opts.shape)
    lab.hosts(opts.prefill, opts.decode)  # refuses --prefill/--decode with a shape that lists its hosts
    if opts.command == "inventory-args":
        print(" ".join(inventory.inventory_args(opts.prefill, opts.decode, shape=opts.shape)))
        return 0
    started = time.monotonic()
    assets(lab)
    if opts.command == "assets":
        image.ensure_image()
        # Host directories molecule scenarios share between their nodes
        # (the cluster scenario has its own: it runs beside the others).
        for shared in ("molecule-shared", "molecule-shared-cluster"):
            (STATE / shared).mkdir(parents=True, exist_ok=True)
        return 0
    if opts.command == "nodes":
        nodes.converge_nodes(lab, opts.prefill, opts.decode)
        return 0
    return up(lab, opts.prefill, opts.decode, started)
