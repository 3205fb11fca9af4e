"""Lab connection: containers.podman.podman, with pipelining.

The collection's plugin disables pipelining because it runs `podman exec`
without `-i`, so a module sent on stdin never reaches the container. With
`-i` it does: each module then costs one `podman exec` instead of two (a
remote temp dir, then the run), which is most of a no-op site.yml on lab
nodes. Real clusters use ssh, pipelined by ansible.cfg; this only brings the
lab to the same execution path.
"""

from __future__ import annotations

from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection

DOCUMENTATION = """
    name: pd_podman
    short_description: containers.podman.podman with pipelining (lab nodes)
    description:
      - Runs commands in an existing podman container like containers.podman.podman,
        and feeds pipelined modules to C(podman exec -i) on stdin.
    options:
      remote_addr:
        description: The container's name or ID.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description: User to run commands as inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description: Extra arguments for every podman command line.
        default: ''
        ini:
          - section: defaults
            key: podman_extra_args
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description: The podman executable.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
      pipelining:
        description: Send modules on stdin instead of copying them first.
        type: boolean
        default: true
        ini:
          - section: connection
            key: pipelining
        env:
          - name: ANSIBLE_PIPELINING
        vars:
          - name: ansible_pipelining
"""


class Connection(PodmanConnection):
    transport = "pd_podman"
    has_pipelining = True

    def _podman(self, cmd, cmd_args=None, in_data=None, use_container_id=True):
        # Only `exec` with data on stdin needs -i; every other call is the
        # collection's own.
        if in_data is not None and isinstance(cmd, list) and cmd[:1] == ["exec"]:
            cmd = ["exec", "-i", *cmd[1:]]
        return super()._podman(cmd, cmd_args, in_data, use_container_id)
