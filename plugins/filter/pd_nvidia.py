"""Ansible adapter for lib/pd_planner/nvidia.py (the NVIDIA stack per platform)."""

from __future__ import annotations

import os
import sys

from ansible.errors import AnsibleFilterError

_LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib")
if os.path.normpath(_LIB) not in sys.path:
    sys.path.insert(0, os.path.normpath(_LIB))

from pd_planner import PlanError, dashboards, nvidia  # noqa: E402
from pd_planner.values import plain  # noqa: E402

DOCUMENTATION = r"""
name: pd_nvidia_platform
short_description: What an NVIDIA GPU host of a platform needs
version_added: "1.0.0"
description:
  - Returns the CUDA repository path (architecture mapped, Grace is sbsa), packages per component,
    modprobe options and services of the host's pd_gpu_profile; fails naming the host on an unknown
    platform, a mismatched architecture, an unsupported distribution or a driver branch below 570.
    The same file holds C(pd_nvidia_imex_members), C(pd_nvidia_check_driver), C(pd_nvidia_check_gpus),
    C(pd_nvidia_check_imex), C(pd_nvidia_judge) (every post-install check: one verdict ok, fail or
    skip with its reason per check) and C(pd_nvidia_dcgm_counters).
options:
  _input:
    description: The pd_gpu_profile name.
    type: str
    required: true
  host:
    description: inventory_hostname, for messages.
    type: str
    required: true
  architecture:
    description: ansible_facts architecture.
    type: str
    required: true
  distribution:
    description: ansible_facts distribution.
    type: str
    required: true
  version:
    description: ansible_facts distribution_version.
    type: str
    required: true
  driver_branch:
    description: Driver branch.
    type: int
    required: true
  cuda_version:
    description: CUDA toolkit version.
    type: str
    required: true
  check_architecture:
    description: Require the host's architecture to match the platform's.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Select the stack of this host
  ansible.builtin.set_fact:
    nvidia_platform: >-
      {{ pd_gpu_profile | pd_nvidia_platform(host=inventory_hostname, architecture=ansible_facts.architecture,
         distribution=ansible_facts.distribution, version=ansible_facts.distribution_version,
         driver_branch=580, cuda_version='13.0') }}
"""

RETURN = r"""
_value:
  description: Repository path, packages, modprobe options, services.
  type: dict
"""


def _platform(profile, **kw):
    try:
        return nvidia.platform(str(profile), **plain(kw))
    except PlanError as err:
        raise AnsibleFilterError(str(err)) from None


def _judge(report, host, *, gpus, branch, strict_branch, imex, fabric_manager, imex_members):
    return nvidia.judge(str(host), plain(report), gpus=int(gpus), branch=int(branch),
                        strict_branch=bool(strict_branch), imex=bool(imex), fabric_manager=bool(fabric_manager),
                        imex_members=[str(m) for m in imex_members])


class FilterModule:
    def filters(self):
        return {
            "pd_nvidia_platform": _platform,
            "pd_nvidia_imex_members": lambda plan, host: nvidia.imex_members(plain(plan), str(host)),
            "pd_nvidia_check_driver": lambda out, host, branch, strict=True: nvidia.check_driver(
                str(host), str(out), int(branch), bool(strict)),
            "pd_nvidia_check_gpus": lambda out, host, expected: nvidia.check_gpu_count(
                str(host), str(out), int(expected)),
            "pd_nvidia_check_imex": lambda out, host, members: nvidia.check_imex(
                str(host), str(out), [str(m) for m in members]),
            "pd_nvidia_judge": _judge,
            "pd_nvidia_dcgm_counters": lambda _unused=None: nvidia.dcgm_counters(dashboards.DCGM_METRICS),
        }
