"""Ansible adapter for lib/pd_planner/nvidia.py (the NVIDIA stack per platform)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from pd_planner import PlanError, dashboards, nvidia
from pd_planner.values import plain

# Each filter of this file has its ansible-doc entry in plugins/filter/<filter name>.yml
# (ansible-doc reads that sidecar when the Python file holds no DOCUMENTATION).


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
