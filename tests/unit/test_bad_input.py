"""Realistic operator mistakes fail in the plan, before any host changes,
with one message that names the variable (its full path when nested) and
what would be valid (issue 17, item 7)."""

from __future__ import annotations

import ast
import copy
import json
import re

import pytest
import yaml
from conftest import ROOT, ansible_inventory, gb200_pools, make_spec, plan_fails
from pd_planner import PlanError, build_plan, schema
from pd_planner.inventory import known_variables, spec_from_inventory


def _pools(**changes) -> dict:
    pools = gb200_pools()
    for pool, values in changes.items():
        pools[pool].update(values)
    return pools


# --- unique addresses ----------------------------------------------------------
def test_two_hosts_with_the_same_pd_address():
    spec = make_spec()
    spec["hosts"]["decode-tray-001"]["address"] = spec["hosts"]["decode-tray-000"]["address"]
    plan_fails(spec, "hosts decode-tray-000 and decode-tray-001 both have the cluster address 10.20.40.1",
           "pd_address", "needs its own address")


def test_a_host_sharing_the_routers_address():
    spec = make_spec()
    spec["hosts"]["prefill-tray-000"]["address"] = "10.20.0.5"  # ctl-01's
    plan_fails(spec, "hosts prefill-tray-000 and ctl-01 both have the cluster address 10.20.0.5")


# --- unknown pd_* variables ------------------------------------------------------
class _Inventory:
    """A reader over {host: {variable: value}} that can also list names, as
    the pd_plan filter's reader over hostvars does."""

    def __init__(self, values: dict):
        self.values = values

    def __call__(self, host, variable):
        return self.values.get(host, {}).get(variable)

    def names(self, host):
        return list(self.values.get(host, {}))


def _inventory_values(**extra) -> tuple[dict, dict]:
    groups = {"prefill": ["p"], "decode": ["d"], "router": ["r"], "monitoring": ["r"]}
    cluster = {"pd_vllm_version": "0.33.0", "pd_kv_connector": "NixlConnector",
               "pd_model": {"served_name": "m", "path": "/m"}, "pd_cluster_cidr": "10.0.0.0/24", **extra}
    return groups, {h: dict(cluster) for h in ("p", "d", "r")}


def test_misspelled_top_level_variable_is_refused_with_a_suggestion():
    groups, values = _inventory_values(pd_ruoter={"port": 8000})
    with pytest.raises(PlanError) as caught:
        spec_from_inventory(groups, _Inventory(values))
    message = str(caught.value)
    assert "pd_ruoter (did you mean pd_router?) on host" in message, message
    assert "valid pd_* variables:" in message and "pd_router," in message and "pd_cluster_cidr" in message


def test_unknown_variable_on_a_retired_host_is_refused_too():
    groups, values = _inventory_values()
    groups["retired"] = ["old"]
    values["old"] = {"pd_adress": "10.0.0.9"}
    with pytest.raises(PlanError, match=r"pd_adress \(did you mean pd_address\?\) on host old"):
        spec_from_inventory(groups, _Inventory(values))


def test_every_pd_variable_the_project_itself_sets_is_known():
    # No false refusals: the roles' arguments, the vault variables their
    # defaults read, facts they set, and what the sample inventories and
    # molecule scenarios set are all known names.
    used: dict[str, str] = {}
    for path in ROOT.glob("roles/*/meta/argument_specs.yml"):
        for entry in yaml.safe_load(path.read_text())["argument_specs"].values():
            used.update({n: str(path) for n in entry.get("options") or {} if n.startswith("pd_")})
    for path in [*ROOT.glob("roles/*/defaults/main.yml"), *ROOT.glob("roles/*/tasks/*.yml"),
                 *ROOT.glob("playbooks/**/*.yml")]:
        text = path.read_text()
        # Variables read inside templates ({{ pd_x | default(...) }}), and
        # facts set or registered.
        for expression in re.findall(r"\{\{(.*?)\}\}", text, re.S):
            used.update({n: str(path) for n in re.findall(r"(?<![\w.'\"])(pd_[a-z0-9_]+)\s*\|\s*default", expression)})
        used.update({n: str(path) for n in re.findall(r"register:\s*(pd_[a-z0-9_]+)", text)})
    for path in [*ROOT.glob("inventories/**/*.yml"), *ROOT.glob("molecule/*/molecule.yml")]:
        for name in re.findall(r"^\s*(pd_[a-z0-9_]+):", path.read_text(), re.M):
            used[name] = str(path)
    unknown = {n: p for n, p in used.items() if n not in known_variables()}
    assert not unknown, (f"pd_* names the project sets but the planner would refuse: {unknown}; "
                         "add them to OTHER_VARIABLES in lib/pd_planner/inventory.py")
    assert {"pd_router_api_key", "pd_hf_token", "pd_plan_show", "pd_pool"} <= set(used)


def test_sample_inventories_pass_the_name_check_as_ansible_merges_them():
    for inventory in ("gb200", "lab"):
        groups, hostvars = ansible_inventory(ROOT / "inventories" / inventory)
        values = {h: {k: v for k, v in hv.items()} for h, hv in hostvars.items()}
        spec = spec_from_inventory(groups, _Inventory(values))
        assert spec["hosts"], inventory


# --- nested types ---------------------------------------------------------------
def test_nested_list_of_the_wrong_type_names_the_full_path():
    spec = make_spec(pools=_pools(prefill={"offload": {"cpu_offload_params": "experts"}}))
    plan_fails(spec, "pd_pool (prefill).offload.cpu_offload_params is 'experts' (str)", "expected list of (string)")


def test_list_item_of_the_wrong_type_names_its_index():
    spec = make_spec(pools=_pools(decode={"cudagraph_capture_sizes": [1, "2", 4]}))
    plan_fails(spec, "pd_pool (decode).cudagraph_capture_sizes[1] is '2' (str)", "expected integer")


def test_unknown_nested_option_gets_a_suggestion():
    spec = make_spec(pools=_pools(prefill={"offload": {"offload_grup_size": 4}}))
    plan_fails(spec, "pd_pool (prefill).offload has unknown option(s) offload_grup_size",
           "did you mean offload_group_size?", "valid options:")


def test_env_value_that_is_a_yaml_boolean():
    spec = make_spec(pools=_pools(decode={"env": {"NCCL_MNNVL_ENABLE": True}}))
    plan_fails(spec, "pd_pool (decode).env.NCCL_MNNVL_ENABLE is True (bool)", "expected a string (one line) or number")


def test_env_name_that_is_not_an_environment_variable():
    spec = make_spec(pools=_pools(decode={"env": {"NCCL-DEBUG": "INFO"}}))
    plan_fails(spec, "pd_pool (decode).env has the key 'NCCL-DEBUG'", "environment variable names as keys")


def test_worker_env_given_as_a_list():
    plan_fails(make_spec(worker_env=["NCCL_DEBUG=INFO"]), "pd_worker_env is ['NCCL_DEBUG=INFO'] (list)",
           "expected mapping of environment variable names to a string (one line) or number")


def test_env_value_with_a_newline():
    plan_fails(make_spec(worker_env={"NCCL_DEBUG": "INFO\nLD_PRELOAD=/tmp/x.so"}), "pd_worker_env.NCCL_DEBUG is",
           "expected a string (one line) or number")


def test_values_written_into_units_are_checked_by_pattern():
    spec = make_spec(ucx_tls="rc, cuda_copy")
    plan_fails(spec, "pd_ucx_tls is 'rc, cuda_copy'; valid: a comma-separated UCX transport list")
    spec = make_spec(model={"served_name": "deepseek r1", "path": "/m"})
    plan_fails(spec, "pd_model.served_name is 'deepseek r1'; valid: a name without whitespace")
    spec = make_spec(model={"served_name": "r1", "path": "models/r1"})
    plan_fails(spec, "pd_model.path is 'models/r1'; valid: an absolute path")
    spec = make_spec()
    spec["hosts"]["decode-tray-000"]["ucx_net_devices"] = "mlx5_0:1 mlx5_1:1"
    plan_fails(spec, "host decode-tray-000: pd_ucx_net_devices is 'mlx5_0:1 mlx5_1:1'; valid: comma-separated devices")


def test_extra_args_value_that_cannot_be_a_flag_value():
    spec = make_spec(pools=_pools(prefill={"extra_args": {"--speculative-config": [{"method": "mtp"}]}}))
    plan_fails(spec, "pd_pool (prefill).extra_args.--speculative-config is [{'method': 'mtp'}]",
           "expected a flag value: true (bare flag)")


def test_json_config_with_a_non_string_key():
    spec = make_spec(pools=_pools(prefill={"compilation_config": {"pass_config": {1: True}}}))
    plan_fails(spec, "pd_pool (prefill).compilation_config.pass_config has the key 1", "JSON keys are strings")


def test_version_written_as_a_yaml_number():
    plan_fails(make_spec(vllm_version=0.34), "pd_vllm_version is 0.34 (float)", "expected string")


def test_connector_given_as_a_list():
    plan_fails(make_spec(kv_connector=["NixlConnector"]), "pd_kv_connector is ['NixlConnector'] (list)",
           "expected string")


def test_host_variable_of_the_wrong_type_names_the_inventory_variable():
    spec = make_spec()
    spec["hosts"]["prefill-tray-000"]["cpu_cores"] = "0-3"
    plan_fails(spec, "host prefill-tray-000: pd_cpu_cores is '0-3' (str)", "expected list of (integer, at least 0)")


def test_a_billion_gpus_on_a_host_is_refused_before_any_layout():
    # Unbounded, this value made the planner allocate until the kernel killed it.
    spec = make_spec()
    spec["hosts"]["prefill-tray-000"]["gpus"] = 10**9
    plan_fails(spec, "host prefill-tray-000: pd_gpus is 1000000000; valid: integer 1-128")


def test_negative_cpu_core():
    spec = make_spec()
    spec["hosts"]["decode-tray-000"]["cpu_cores"] = [0, -1]
    plan_fails(spec, "host decode-tray-000: pd_cpu_cores[1] is -1; valid: integer, at least 0")


def test_pool_port_out_of_range_names_the_option():
    plan_fails(make_spec(pools=_pools(decode={"http_port": 0})),
           "pd_pool (decode).http_port is 0; valid: integer 1-65535 or null")


def test_pool_shape_that_is_not_a_mapping():
    plan_fails(make_spec(pools={**gb200_pools(), "decode": ["gpus_per_instance: 8"]}),
           "pd_pool (decode) is ['gpus_per_instance: 8'] (list); expected a mapping", "gpus_per_instance")


def _wrong_values(spec_type) -> list:
    """Values of a kind the type does not accept (what YAML can produce)."""
    kinds = ["text", 7, 0.5, True, None, [1], {"k": 1}]
    if isinstance(spec_type, tuple):
        return [v for v in kinds if not schema._leaf_ok(v, spec_type)]
    if isinstance(spec_type, schema.Bounded):
        beyond = [spec_type.low - 1] if spec_type.low is not None else []
        beyond += [spec_type.high + 1] if spec_type.high is not None else []
        return [v for v in kinds if not schema._leaf_ok(v, spec_type.types)] + beyond
    if isinstance(spec_type, (schema.ListOf,)):
        return ["text", 7, {"k": 1}]
    if isinstance(spec_type, (schema.MapOf, schema.Options)):
        return ["text", 7, [1]]
    if isinstance(spec_type, (schema.Choice, schema.VllmChoice)):
        return [7, [1], {"k": 1}, "no-such-value"]
    return []


_TABLES = [("pools.prefill", "pd_pool (prefill).", schema.POOL_OPTIONS),
           ("pools.prefill.offload", "pd_pool (prefill).offload.", schema.OFFLOAD_OPTIONS),
           ("router", "pd_router.", schema.ROUTER_OPTIONS),
           ("monitoring", "pd_monitoring.", schema.MONITORING_OPTIONS),
           ("model", "pd_model.", schema.MODEL_OPTIONS)]


@pytest.mark.parametrize(("where", "prefix", "table"), _TABLES, ids=[t[0] for t in _TABLES])
def test_every_option_of_the_wrong_kind_fails_naming_its_path(where, prefix, table):
    base = make_spec()
    for key, (spec_type, _default, _meaning) in table.items():
        for value in _wrong_values(spec_type):
            spec = copy.deepcopy(base)
            target = spec
            for part in where.split("."):
                target = target.setdefault(part, {})
            target[key] = value
            with pytest.raises(PlanError) as caught:
                build_plan(spec)
            assert prefix + key in str(caught.value), (key, value, str(caught.value))


# --- enums against the pinned vLLM -------------------------------------------------
def test_unknown_kv_cache_dtype_never_reaches_serve_args():
    spec = make_spec(pools=_pools(decode={"kv_cache_dtype": "fp8-e4m3"}))
    plan_fails(spec, "pd_pool (decode).kv_cache_dtype 'fp8-e4m3' is not a --kv-cache-dtype value of vLLM 0.33.0",
           "did you mean fp8_e4m3?", "valid: auto, float16")


def test_quantization_checked_against_the_pinned_release():
    # w4afp8 arrived in 0.34.0: refused on 0.33.0, accepted by the type check on 0.34.0.
    model = {"served_name": "m", "path": "/m"}
    plan_fails(make_spec(model=model, pools=_pools(prefill={"quantization": "w4afp8"})),
           "pd_pool (prefill).quantization 'w4afp8' is not a --quantization value of vLLM 0.33.0", "modelopt_fp4")
    newer = make_spec(vllm_version="0.34.0", model=model, pools=_pools(prefill={"quantization": "w4afp8"}))
    try:
        build_plan(newer)
    except PlanError as exc:  # a later rule (the checkpoint's own method) may still object
        assert "is not a --quantization value" not in str(exc)


def test_unknown_moe_backend():
    plan_fails(make_spec(pools=_pools(decode={"moe_backend": "flashinfer"})),
           "pd_pool (decode).moe_backend 'flashinfer' is not a --moe-backend value of vLLM 0.33.0",
           "flashinfer_cutlass")


def test_unknown_offload_backend():
    spec = make_spec(pools=_pools(prefill={"offload": {"offload_backend": "cpu"}}))
    plan_fails(spec, "pd_pool (prefill).offload.offload_backend 'cpu' is not a --offload-backend value",
           "valid: auto, uva, prefetch")


def test_unknown_kv_role_gets_a_suggestion():
    plan_fails(make_spec(pools=_pools(decode={"kv_role": "kv_consumers"})),
           "pd_pool (decode).kv_role 'kv_consumers' is not valid (did you mean kv_consumer?)",
           "valid: kv_producer, kv_consumer, kv_both")


def _literal(path, name: str) -> tuple:
    for node in ast.parse(path.read_text()).body:
        target = getattr(node, "target", None) or (node.targets[0] if isinstance(node, ast.Assign) else None)
        if getattr(target, "id", None) == name:
            return tuple(element.value for element in node.value.slice.elts)
    raise AssertionError(f"{name} not found in {path}")


@pytest.mark.parametrize("version", ["0.33.0", "0.34.0"])
def test_enum_tables_match_the_vllm_source(version):
    source = ROOT / ".venv-vllm" / f"overlay-{version}" / "vllm"
    if not source.is_dir():
        pytest.skip(f"vLLM {version} source not unpacked (make vllm-venv)")
    wanted = {
        "--kv-cache-dtype": _literal(source / "config" / "cache.py", "CacheDType"),
        "--moe-backend": _literal(source / "config" / "kernel.py", "MoEBackend"),
        "--quantization": _literal(source / "model_executor" / "layers" / "quantization" / "__init__.py",
                                   "QuantizationMethods"),
        "--offload-backend": _literal(source / "config" / "offload.py", "OffloadBackend"),
    }
    for flag, values in wanted.items():
        assert set(schema.VLLM_CHOICES[flag][version]) == set(values), flag


# --- IPv6: refused, clearly --------------------------------------------------------
def test_ipv6_cluster_network_is_refused():
    plan_fails(make_spec(cluster_cidr="fd00:20::/64"), "pd_cluster_cidr 'fd00:20::/64' is an IPv6 network",
           "IPv4 cluster networks only", "10.20.0.0/22")


def test_ipv6_host_address_is_refused():
    spec = make_spec()
    spec["hosts"]["decode-tray-000"]["address"] = "fd00:20::5"
    plan_fails(spec, "host decode-tray-000: pd_address fd00:20::5 is IPv6", "IPv4 address inside pd_cluster_cidr")


# --- secrets an enabled feature needs --------------------------------------------
def _api_key_inventory(key):
    groups, values = _inventory_values(pd_router={"api_key_enabled": True})
    for host in values:
        values[host]["pd_address"] = {"p": "10.0.0.2", "d": "10.0.0.3", "r": "10.0.0.4"}[host]
        if key is not None:
            values[host]["pd_router_api_key"] = key
    return spec_from_inventory(groups, _Inventory(values))


def test_api_key_enabled_without_the_key():
    spec = _api_key_inventory(None)
    assert json.dumps(spec).count("pd_router_api_key") == 1  # a status, never a value
    plan_fails({**make_spec(router={"api_key_enabled": True}), "secrets": spec["secrets"]},
           "pd_router.api_key_enabled is true but the vault variable pd_router_api_key is not set",
           "16+ characters", "api_key_enabled: false")


def test_api_key_too_short():
    spec = _api_key_inventory("short-key")
    assert "short-key" not in json.dumps(spec)
    plan_fails({**make_spec(router={"api_key_enabled": True}), "secrets": spec["secrets"]},
           "pd_router_api_key is shorter than 16 characters")


def test_api_key_present_plans_and_stays_out_of_the_plan():
    key = "k" * 12 + "-secret-value"
    spec = _api_key_inventory(key)
    plan = build_plan({**make_spec(router={"api_key_enabled": True}), "secrets": spec["secrets"]})
    assert key not in json.dumps(plan)


def test_api_key_only_on_the_router_host():
    """Workers require the key too (VLLM_API_KEY): a key in group_vars/router only is refused."""
    groups, values = _inventory_values(pd_router={"api_key_enabled": True})
    for host in values:
        values[host]["pd_address"] = {"p": "10.0.0.2", "d": "10.0.0.3", "r": "10.0.0.4"}[host]
    values["r"]["pd_router_api_key"] = "k" * 20
    spec = spec_from_inventory(groups, _Inventory(values))
    plan_fails({**make_spec(router={"api_key_enabled": True}), "secrets": spec["secrets"]},
               "pd_router_api_key is not set on ", "the router and every worker host", "group_vars/all")


def test_api_key_that_differs_between_router_and_workers():
    groups, values = _inventory_values(pd_router={"api_key_enabled": True})
    for host in values:
        values[host]["pd_address"] = {"p": "10.0.0.2", "d": "10.0.0.3", "r": "10.0.0.4"}[host]
        values[host]["pd_router_api_key"] = "router-key-0123456789" if host == "r" else "other-key-0123456789"
    spec = spec_from_inventory(groups, _Inventory(values))
    assert "router-key" not in json.dumps(spec) and "other-key" not in json.dumps(spec)
    plan_fails({**make_spec(router={"api_key_enabled": True}), "secrets": spec["secrets"]},
               "pd_router_api_key has different values", "refused by the workers")


# --- router values ---------------------------------------------------------------
def test_router_bind_address_that_is_a_host_name():
    plan_fails(make_spec(router={"bind_address": "localhost"}), "pd_router.bind_address is 'localhost'",
           "an IPv4 address of the router host, 0.0.0.0")


def test_router_bind_address_ipv6_wildcard():
    plan_fails(make_spec(router={"bind_address": "::"}), "pd_router.bind_address is '::'", "IPv6")


def test_one_bind_address_for_two_routers():
    spec = make_spec(router={"bind_address": "10.20.0.5"})
    spec["groups"]["router"].append("prefill-tray-000")
    plan_fails(spec, "pd_router.bind_address 10.20.0.5 is one address but the router group has 2 hosts",
           "0.0.0.0 or unset")


def test_router_health_endpoint_that_is_not_a_path():
    plan_fails(make_spec(router={"health_check_endpoint": "health"}), "pd_router.health_check_endpoint is 'health'",
           "an absolute URL path such as /health")


def test_router_interval_of_zero():
    plan_fails(make_spec(router={"health_check_interval_secs": 0}), "pd_router.health_check_interval_secs is 0",
           "at least 1")


def test_router_port_out_of_range():
    plan_fails(make_spec(router={"metrics_port": 70000}), "pd_router.metrics_port is 70000", "1-65535")


def test_router_startup_check_slower_than_its_timeout():
    plan_fails(make_spec(router={"worker_startup_check_interval": 60, "worker_startup_timeout_secs": 30}),
           "pd_router.worker_startup_check_interval 60 is longer than pd_router.worker_startup_timeout_secs 30")


def test_router_policy_typo_gets_a_suggestion():
    plan_fails(make_spec(router={"prefill_policy": "cache-aware"}),
           "pd_router.prefill_policy 'cache-aware' is not valid (did you mean cache_aware?)", "round_robin")


# --- dense model with expert parallelism ---------------------------------------------
def test_expert_parallelism_on_a_dense_model_is_warned():
    model = {"served_name": "tiny", "path": "/m", "profile": "tiny_llama"}
    pools = _pools()
    pools["prefill"]["expert_parallel"] = True
    plan = build_plan(make_spec(model=model, pools=pools))
    dense = [w for w in plan["warnings"] if "dense model" in w]
    assert dense and "pd_pool (prefill).expert_parallel" in dense[0] and "set expert_parallel: false" in dense[0]


# --- public cluster networks -------------------------------------------------------
def _public_spec(**extra) -> dict:
    spec = make_spec(cluster_cidr="11.20.0.0/16", **extra)
    for host in spec["hosts"].values():
        host["address"] = "11." + host["address"].split(".", 1)[1]
    return spec


def test_public_cluster_network_is_refused():
    plan_fails(_public_spec(), "pd_cluster_cidr 11.20.0.0/16 is not a private network",
           "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10", "pd_plan_allow_public_network: true")


def test_loopback_hosts_are_one_machine_on_purpose():
    # The read-only check's fixture runs one machine as two inventory hosts.
    spec = make_spec(1, 1, pools=_pools(decode={"gpus_per_instance": 4, "data_parallel_size": 2,
                                                 "tensor_parallel_size": 2}),
                     cluster_cidr="127.0.0.0/8")
    for host in spec["hosts"].values():
        host["address"] = "127.0.0.1"
    build_plan(spec)


def test_public_cluster_network_allowed_explicitly():
    assert build_plan(_public_spec(allow_public_network=True))["cluster_cidr"] == "11.20.0.0/16"


def test_allow_public_network_read_from_the_inventory():
    groups, values = _inventory_values(pd_plan_allow_public_network=True)
    assert spec_from_inventory(groups, _Inventory(values))["allow_public_network"] is True
    groups, values = _inventory_values(pd_plan_allow_public_network="yes")
    with pytest.raises(PlanError, match="pd_plan_allow_public_network is 'yes'; expected true or false"):
        spec_from_inventory(groups, _Inventory(values))


# --- found by trying operator mistakes on inventories/gb200 and lab ---------------
def test_cluster_cidr_with_host_bits_suggests_the_network():
    plan_fails(make_spec(cluster_cidr="10.20.0.5/22"), "pd_cluster_cidr '10.20.0.5/22' has host bits set",
               "did you mean '10.20.0.0/22'?")


def test_router_admitting_nothing_is_refused():
    """vllm-router 0.1.17 with --max-concurrent-requests 0 answered 429 to every request (measured)."""
    plan_fails(make_spec(router={"max_concurrent_requests": 0}),
               "pd_router.max_concurrent_requests is 0; valid: at least 1")


def test_router_numbers_beyond_its_fields_are_refused():
    plan_fails(make_spec(router={"worker_startup_timeout_secs": 10**20}),
               "pd_router.worker_startup_timeout_secs is 100000000000000000000; valid: at most 2147483647")
