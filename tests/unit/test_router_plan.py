"""The router's part of the plan: rank-pinned workers for data-parallel
instances, settings derived from the plan, and its hardened unit."""

from __future__ import annotations

import copy
import math
import shutil
import subprocess

import jinja2
import pytest
import yaml
from conftest import ROOT, make_spec
from pd_planner import PlanError, build_plan
from pd_planner import systemd as sd
from pd_planner.router import listed_workers, unit_settings
from specs import systemd_split

ROLE = ROOT / "roles" / "vllm_router"


def _pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def _flag(args: list[str], flag: str) -> str:
    (value,) = _pairs(args, flag)
    return value


STATIC = {"port": 8000, "metrics_port": 29000, "discovery": "static"}


def test_data_parallel_instances_register_one_worker_per_rank():
    """Static mode: the unit lists every rank pinned (url@rank)."""
    plan = build_plan(make_spec(2, 2, router=STATIC))
    for role in ("prefill", "decode"):
        members = [i for i in plan["instances"] if i["role"] == role]
        assert any(i["parallelism"]["data_parallel_size"] > 1 for i in members), "the sample has DP instances"
        expected = sorted(
            f"{i['url']}@{rank}" for i in members for rank in range(i["parallelism"]["data_parallel_size"]))
        assert plan["router"]["workers"][role] == expected
        # The unit registers exactly these strings, so /workers lists them.
        assert sorted(_pairs(plan["router"]["args"], f"--{role}")) == expected
    args = plan["router"]["args"]
    assert all(args[i + 2] == "none" for i, a in enumerate(args) if a == "--prefill")


def test_single_rank_instances_keep_their_bare_url():
    pools = {p: {"gpus_per_instance": 4, "tensor_parallel_size": 4, "max_model_len": 4096}
             for p in ("prefill", "decode")}
    plan = build_plan(make_spec(1, 1, pools=pools, model={"served_name": "m", "path": "/m"}, router=STATIC))
    urls = {i["role"]: [] for i in plan["instances"]}
    for i in plan["instances"]:
        urls[i["role"]].append(i["url"])
    assert plan["router"]["workers"] == {role: sorted(u) for role, u in urls.items()}
    assert not any("@" in a for a in plan["router"]["args"])


def test_router_listing_the_plan_is_no_change():
    """What the role compares: /workers (rank-pinned, any order) read back
    equals router.workers, so a no-change rerun restarts nothing; a bare
    instance URL (what remove_worker ignores) never appears."""
    plan = build_plan(make_spec(2, 2, router=STATIC))
    listed = {"workers": [{"url": u, "worker_type": t} for t in ("decode", "prefill")
                          for u in reversed(plan["router"]["workers"][t])]}
    assert listed_workers(listed) == plan["router"]["workers"]
    # Scale-in: dropping one DP instance removes all of its ranks.
    smaller = build_plan(make_spec(1, 2, router=STATIC))
    dropped = set(plan["router"]["workers"]["prefill"]) - set(smaller["router"]["workers"]["prefill"])
    gone = {i["url"] for i in plan["instances"] if i["role"] == "prefill"} - {
        i["url"] for i in smaller["instances"] if i["role"] == "prefill"}
    ranks = {i["url"]: i["parallelism"]["data_parallel_size"] for i in plan["instances"]}
    assert gone and dropped == {f"{u}@{r}" for u in gone for r in range(ranks[u])}


def test_worker_lines_with_ranks_do_not_count_as_a_settings_change():
    plan = build_plan(make_spec(2, 2, router=STATIC))
    line = sd.exec_line(["/opt/r/bin/vllm-router", *plan["router"]["args"]])
    fewer = sd.exec_line(["/opt/r/bin/vllm-router", *build_plan(make_spec(1, 2, router=STATIC))["router"]["args"]])
    assert unit_settings(line) == unit_settings(fewer)
    assert systemd_split(line)[1:] == plan["router"]["args"]
    # Decode scale-in changes the derived admission limits, yet stays a live
    # removal (no router restart); any other setting still counts.
    pools = copy.deepcopy(make_spec(2, 2)["pools"])
    two = build_plan(make_spec(2, 4, pools=pools, router=STATIC))
    pools["decode"]["instances"] = 1
    one = build_plan(make_spec(2, 4, pools=pools, router=STATIC))
    one_args, two_args = one["router"]["args"], two["router"]["args"]
    assert _flag(one_args, "--max-concurrent-requests") != _flag(two_args, "--max-concurrent-requests")
    assert unit_settings(sd.exec_line(["/r", *one_args])) == unit_settings(sd.exec_line(["/r", *two_args]))
    slower = [("30" if a == "5" and one_args[i - 1] == "--health-check-interval-secs" else a)
              for i, a in enumerate(one_args)]
    assert unit_settings(sd.exec_line(["/r", *slower])) != unit_settings(sd.exec_line(["/r", *one_args]))


def test_no_retry_flag_and_the_old_key_is_refused():
    plan = build_plan(make_spec(2, 2))
    assert "--retry-max-retries" not in plan["router"]["args"]
    with pytest.raises(PlanError, match="retry_max_retries"):
        build_plan(make_spec(2, 2, router={"retry_max_retries": 3}))


def test_request_timeout_outlasts_the_longest_stream_the_plan_allows():
    spec = make_spec(2, 2)
    plan = build_plan(spec)
    mon = plan["router"]["effective"]
    max_len = int(_flag(next(i for i in plan["instances"] if i["role"] == "decode")["nodes"][0]["serve_args"],
                        "--max-model-len"))
    # Defaults: TTFT alert 10 s, ITL alert 0.25 s per token.
    assert mon["request_timeout_secs"] == math.ceil(10 + max_len * 0.25)
    assert _flag(plan["router"]["args"], "--request-timeout-secs") == str(mon["request_timeout_secs"])
    short = build_plan(make_spec(2, 2, router={"request_timeout_secs": 1800}))
    assert any("request_timeout_secs 1800 cuts answers" in w for w in short["warnings"])
    assert not any("request_timeout_secs" in w for w in plan["warnings"])


def test_admission_limits_follow_decode_capacity():
    plan = build_plan(make_spec(2, 2))
    decode = [i for i in plan["instances"] if i["role"] == "decode"]
    # GB200 (186 GB): vLLM's default max_num_seqs is 1024 per engine.
    slots = sum(1024 * i["parallelism"]["data_parallel_size"] for i in decode)
    args = plan["router"]["args"]
    assert _flag(args, "--max-concurrent-requests") == str(slots)
    # No queue: overload answers 429 at once (0.1.17's queue only delays it into a 408).
    assert _flag(args, "--queue-size") == "0"
    assert _flag(args, "--rate-limit-tokens-per-second") == "1"
    pools = copy.deepcopy(make_spec(2, 2)["pools"])
    pools["decode"].setdefault("extra_args", {})["--max-num-seqs"] = 64
    limited = build_plan(make_spec(2, 2, pools=pools))
    assert _flag(limited["router"]["args"], "--max-concurrent-requests") == str(
        sum(64 * i["parallelism"]["data_parallel_size"] for i in decode))


def test_fast_dead_worker_detection_flags():
    args = build_plan(make_spec(2, 2))["router"]["args"]
    assert (_flag(args, "--health-check-interval-secs"), _flag(args, "--health-failure-threshold"),
            _flag(args, "--health-check-timeout-secs")) == ("5", "2", "5")


def _render_unit(plan: dict, **overrides) -> str:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["pd_exec_line"] = sd.exec_line
    env.filters["bool"] = bool
    port = plan["router"]["settings"]["port"]
    values = {
        **defaults, "ansible_managed": "managed", "pd_plan": plan,
        "_vllm_router_host_plan": plan["router"]["hosts"][0],
        "_vllm_router_venv": f"/opt/vllm-router/{defaults['vllm_router_version']}",
        "_vllm_router_low_port": min(port, plan["router"]["settings"]["metrics_port"]) < 1024,
        **overrides,
    }
    return env.get_template("vllm-router.service.j2").render(values)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("port", [8000, 443])
def test_router_unit_exposure_is_at_most_3_5(tmp_path, port):
    plan = build_plan(make_spec(2, 2, router={"port": port, "metrics_port": 29000}))
    unit = tmp_path / "vllm-router.service"
    unit.write_text(_render_unit(plan))
    assert ("CAP_NET_BIND_SERVICE" in unit.read_text()) == (port < 1024)
    # A user namespace cannot be set up in the lab's containers (217/USER).
    assert "\nPrivateUsers=" not in unit.read_text()
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, check=False)
    overall = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    assert overall, result.stdout + result.stderr
    score = float(overall[0].split("level for")[1].split(":")[1].split()[0])
    assert score <= 3.5, result.stdout


def _policy_flags(args: list[str]) -> dict[str, str]:
    return {flag: args[i + 1] for i, flag in enumerate(args) if flag.endswith("-policy") or flag == "--policy"}


def test_policy_fills_in_only_the_pool_policies_left_unset():
    # vllm-router uses --policy only for a pool policy it was not given: the
    # plan resolves both and passes no --policy.
    default = build_plan(make_spec(router={}))["router"]
    assert _policy_flags(default["args"]) == {"--prefill-policy": "cache_aware", "--decode-policy": "round_robin"}
    fallback = build_plan(make_spec(router={"policy": "random", "decode_policy": "round_robin"}))["router"]
    assert _policy_flags(fallback["args"]) == {"--prefill-policy": "random", "--decode-policy": "round_robin"}
    assert (fallback["effective"]["prefill_policy"], fallback["effective"]["decode_policy"]) == ("random",
                                                                                                 "round_robin")


def test_a_policy_that_applies_to_no_pool_is_refused():
    with pytest.raises(PlanError) as error:
        build_plan(make_spec(router={"policy": "random", "prefill_policy": "cache_aware",
                                     "decode_policy": "round_robin"}))
    assert str(error.value).startswith("pd_router.policy random applies to no pool: prefill_policy and "
                                       "decode_policy are both set")


# --- discovery zmq: instances announce themselves -----------------------------
def _discovery_plan(**router):
    return build_plan(make_spec(2, 2, router={"port": 8000, "metrics_port": 29000, "discovery": "zmq", **router}))


def test_discovery_router_lists_no_worker_and_listens_for_announcements():
    plan = _discovery_plan()
    args = plan["router"]["args"]
    assert plan["router"]["mode"] == "discovery"
    assert "--prefill" not in args and "--decode" not in args
    assert _flag(args, "--vllm-discovery-address") == "10.20.0.5:30001"
    assert _flag(args, "--kv-connector") == "nixl"
    # The port is claimed like every other one (a worker cannot take it).
    assert {"port": 30001, "owner": "router discovery", "unit": "vllm-router"} in plan["hosts"]["ctl-01"]["ports"]


def test_every_instance_announces_its_ranks_to_every_router():
    plan = _discovery_plan(announce_interval_secs=0.5)
    announced = {"prefill": [], "decode": []}
    for inst in plan["instances"]:
        announce = inst["announce"]
        argv = announce["argv"]
        assert announce["unit"] == f"{inst['unit']}-announce"
        assert argv[1].endswith("/libexec/pd_announce.py") and argv[0].endswith("/bin/python")
        assert _flag(argv, "--type") == ("P" if inst["role"] == "prefill" else "D")
        assert _flag(argv, "--health") == f"{inst['url']}/health"
        assert _flag(argv, "--interval") == "0.5"
        assert _pairs(argv, "--router") == ["tcp://10.20.0.5:30001"] == announce["routers"]
        assert _flag(argv, "--state") == announce["state"] == f"/run/pd-announce/{announce['unit']}/state.json"
        announced[inst["role"]] += _pairs(argv, "--address")
    # Exactly the rank-pinned set static mode would list: the router's worker set.
    assert {k: sorted(v) for k, v in announced.items()} == plan["router"]["workers"]
    # Only the leader node runs the announcer.
    for inst in plan["instances"]:
        for node in inst["nodes"]:
            items = [w for w in sd.host_workers(plan, node["host"]) if w["instance"] == inst["name"]]
            assert (items[0]["announce"] is not None) == bool(node["leader"])


def test_static_mode_has_no_announcer():
    plan = build_plan(make_spec(2, 2, router=STATIC))
    assert plan["router"]["mode"] == "pd_nixl"
    assert all("announce" not in inst for inst in plan["instances"])


@pytest.mark.parametrize(("value", "message"), [
    (5, "pd_router.announce_interval_secs is 5; valid: 0.1 to 2"),
    (0.05, "pd_router.announce_interval_secs is 0.05; valid: 0.1 to 2"),
])
def test_an_announce_interval_the_router_would_expire_is_refused(value, message):
    with pytest.raises(PlanError, match=message.replace(".", r"\.")):
        _discovery_plan(announce_interval_secs=value)


def test_an_unknown_discovery_mode_is_refused():
    with pytest.raises(PlanError, match=r"pd_router\.discovery"):
        _discovery_plan(discovery="etcd")
