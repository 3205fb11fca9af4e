"""The output ansible.cfg and molecule promise: YAML results. The default
callback reads `callback_result_format`; plain `result_format` is ignored
silently (the output stays JSON)."""

from __future__ import annotations

import subprocess

import yaml
from conftest import BIN, ENV, ROOT


def test_ansible_cfg_gives_the_default_callback_yaml_results():
    dump = subprocess.run([str(BIN / "ansible-config"), "dump", "--only-changed", "-t", "callback"],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, check=True).stdout
    assert "result_format" in dump and "yaml" in dump.split("result_format", 1)[1].splitlines()[0], dump


def test_molecule_sets_the_option_the_callback_reads():
    config = yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text())
    defaults = config["provisioner"]["config_options"]["defaults"]
    assert defaults.get("callback_result_format") == "yaml"
    assert "result_format" not in defaults
