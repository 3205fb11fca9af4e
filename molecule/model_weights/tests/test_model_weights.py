"""Both nodes see one verified copy, repaired after the side effect's corruption."""

import json

import pytest

testinfra_hosts = ["mol-weights-p", "mol-weights-d"]


def test_checkpoint_verified_from_every_node(host):
    result = host.run("/usr/local/sbin/pd-model-sync verify /models/tiny-llama --manifest SHA256SUMS.json")
    assert result.rc == 0, result.stdout
    assert json.loads(result.stdout)["state"] == "verified"


def test_repaired_shard_matches_the_manifest(host):
    manifest = json.loads(host.file("/models/tiny-llama/SHA256SUMS.json").content_string)
    shard = host.file("/models/tiny-llama/model.safetensors")
    assert shard.size == manifest["model.safetensors"]["size"] > 1000
    assert shard.sha256sum == manifest["model.safetensors"]["sha256"]


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
def test_files_readable_by_the_workers(host, name):
    assert host.file(f"/models/tiny-llama/{name}").mode & 0o004


def test_no_partial_files_left(host):
    assert host.run("ls /models/tiny-llama | grep -c partial").stdout.strip() == "0"


def test_local_stage_copy_verified_on_each_node(host):
    result = host.run("/usr/local/sbin/pd-model-sync verify /var/lib/pd-models/tiny-llama --manifest SHA256SUMS.json")
    assert result.rc == 0, result.stdout
    shared = host.file("/models/tiny-llama/model.safetensors").sha256sum
    assert host.file("/var/lib/pd-models/tiny-llama/model.safetensors").sha256sum == shared


@pytest.mark.parametrize("path", ["/models/tiny-llama", "/var/lib/pd-models/tiny-llama"])
def test_the_path_units_use_links_to_its_verified_revision(host, path):
    link = host.file(path)
    assert link.is_symlink and link.linked_to == f"{path}.revisions/local"
    assert host.file(f"{path}/.pd-verified").content_string == "local\n"
    journal = json.loads(host.file(f"{path}/.pd-sync-journal.json").content_string)
    assert "model.safetensors" in journal


def test_the_progress_file_holds_the_last_result(host):
    status = json.loads(host.file("/var/lib/pd-models/tiny-llama.sync-status.json").content_string)
    assert status["phase"] == "done" and status["result"]["revision"] == "local"
    assert status["bytes_done"] == status["bytes_total"]
