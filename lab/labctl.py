#!/usr/bin/env python3
"""The lab: the whole deployment on one GPU-less machine, in podman nodes.

Nodes are podman containers with systemd as PID 1 on the lab's own network
(pd_cluster_cidr of inventories/lab), built from a Debian 12 image made
locally with debootstrap (no registry). Traffic stays on that network and on
loopback. The commands are in lab/pdlab/cli.py (`labctl.py --help`).
"""

import sys

from pdlab.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
