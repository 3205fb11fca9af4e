"""The lab's code, split by concern; lab/labctl.py is its command line.

shell      paths, the podman/subprocess wrappers and progress lines
inventory  node names, addresses, cores and published ports, derived from inventories/lab
image      host packages, the node image, the wheelhouse and the tiny model
nodes      the lab network and its podman nodes
pollers    NIXL polling threads on a small CPU share
probes     the first completion through the router and Prometheus' view
cli        the commands
"""
