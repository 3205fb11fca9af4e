"""The vllm role's result on the worker nodes, checked from inside them."""

import json

import pytest

VENV = "/opt/vllm/0.32.0"


@pytest.fixture(autouse=True)
def _workers_only(host):
    if host.backend.get_hostname() == "mol-cl-ctl":
        pytest.skip("vLLM is installed on the worker nodes only")


def test_unprivileged_system_user(host):
    user = host.user("vllm")
    assert user.exists and user.group == "vllm"
    assert user.uid < 1000
    assert user.shell == "/usr/sbin/nologin"
    assert host.file("/var/lib/vllm").user == "vllm"


def test_current_points_at_the_verified_venv(host):
    current = host.file("/opt/vllm/current")
    assert current.is_symlink and current.linked_to == VENV
    assert host.file(f"{VENV}/.pd-verified").content_string.strip() == "0.32.0 cpu"
    assert host.file(VENV).user == "root" and host.file(VENV).mode == 0o755


def test_venv_imports_the_pinned_vllm_and_nixl(host):
    out = host.check_output(f"VLLM_TARGET_DEVICE=cpu {VENV}/bin/python -c "
                           "'import json, vllm, nixl; print(json.dumps([vllm.__version__]))' 2>/dev/null")
    assert json.loads(out.splitlines()[-1]) == ["0.32.0"]


def test_cuda_linked_extras_are_gone(host):
    for package in ("torchvision", "torchaudio", "triton"):
        assert host.run(f"{VENV}/bin/python -m pip show -q {package}").rc != 0, package


def test_argument_checker_accepts_a_good_list(host):
    result = host.run("/opt/vllm/current/bin/vllm-check-args --model /models/m -- --max-model-len 2048 "
                     "--enforce-eager --kv-transfer-config "
                     "'{\"kv_connector\":\"NixlConnector\",\"kv_role\":\"kv_producer\",\"kv_buffer_device\":\"cpu\"}'")
    assert result.rc == 0, result.stdout + result.stderr
    assert "ok   vLLM 0.32.0" in result.stdout


def test_argument_checker_rejects_a_bad_list_with_vllms_message(host):
    result = host.run("/opt/vllm/current/bin/vllm-check-args -- --cuda-graph-capture-size 2048")
    assert result.rc == 1
    assert "unrecognized arguments: --cuda-graph-capture-size 2048" in result.stdout
