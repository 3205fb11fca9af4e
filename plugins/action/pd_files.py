# Copyright: vllm-pd-ansible contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write a list of files a role computed: the one render idiom of the roles.

Its documentation (ansible-doc -t module pd_files) is plugins/modules/pd_files.py.

On a host (root "") every file that may change goes through
ansible.builtin.template or ansible.builtin.copy, so check mode, --diff,
validate, owner/group and idempotence are exactly theirs. One command reads
the checksum, mode and owners of all the files first: a file whose templated
content, mode and owners already match is reported unchanged without a module
run of its own (a rerun that changes nothing costs one round trip per task,
not one per file). Under a local render root every file is
templated in this process and written directly (no module run per file):
render.yml writes a host's files in one action.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shlex
import tempfile
import time

from ansible import constants
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

_FILE_KEYS = {"dest", "template", "content", "mode", "owner", "group", "validate", "vars", "label"}


def _check(spec: object, index: int) -> dict:
    if not isinstance(spec, dict):
        raise AnsibleActionFail(f"pd_files: files[{index}] is {type(spec).__name__}, expected a mapping")
    unknown = set(spec) - _FILE_KEYS
    if unknown:
        raise AnsibleActionFail(f"pd_files: files[{index}] has unknown keys {sorted(unknown)}; "
                                f"valid: {sorted(_FILE_KEYS)}")
    dest = spec.get("dest")
    if not isinstance(dest, str) or not dest.startswith("/"):
        raise AnsibleActionFail(f"pd_files: files[{index}].dest is {dest!r}, expected an absolute path")
    if ("template" in spec) == ("content" in spec):
        raise AnsibleActionFail(f"pd_files: {dest}: give exactly one of template and content")
    if not spec.get("mode"):
        raise AnsibleActionFail(f"pd_files: {dest}: mode is required")
    return spec


def _ansible_managed(path: str, source: str) -> str:
    """The `ansible_managed` string the template action gives the same template (the configured
    DEFAULT_MANAGED_STR, its fields filled in, strftime on the template's mtime), inlined as
    ansible-core asks of plugins instead of its internal helper."""
    managed = constants.config.get_config_value("DEFAULT_MANAGED_STR")
    stat = os.stat(source)
    try:
        uid = pwd.getpwuid(stat.st_uid).pw_name
    except KeyError:
        uid = str(stat.st_uid)
    text = managed.format(host=os.uname()[1], uid=uid, file=path)
    return time.strftime(text, time.localtime(stat.st_mtime))


# For each path: "mode owner group sha1", or "-" when it is not a regular file.
_STATE_SCRIPT = ('for f in "$@"; do if [ -f "$f" ] && [ ! -L "$f" ]; then '
                 'printf "%s %s\\n" "$(stat -c "%a %U %G" -- "$f")" "$(sha1sum -- "$f" | cut -d" " -f1)"; '
                 'else echo -; fi; done')


def _matches(spec: dict, state: tuple[int, str, str, str] | None, text: str) -> bool:
    """Whether the host's file already is what the spec would write (content, mode, owners)."""
    if state is None:
        return False
    mode, owner, group, digest = state
    return (mode == int(str(spec["mode"]), 8)
            and owner == str(spec.get("owner") or owner) and group == str(spec.get("group") or group)
            and digest == hashlib.sha1(to_bytes(text)).hexdigest())


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(("root", "files"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        root = to_text(self._task.args.get("root") or "")
        files = self._task.args.get("files")
        if not isinstance(files, list):
            raise AnsibleActionFail(f"pd_files: files is {type(files).__name__}, expected a list")
        specs = [_check(spec, i) for i, spec in enumerate(files)]
        if root:
            results = [self._render(root, spec, task_vars) for spec in specs]
        else:
            present = self._host_state([spec["dest"] for spec in specs])
            results = [self._unchanged(spec) if _matches(spec, present.get(spec["dest"]), self._text(spec, task_vars))
                       else self._on_host(spec, task_vars) for spec in specs]
        failed = [r for r in results if r.get("failed")]
        result.update(
            results=results,
            changed=any(r.get("changed") for r in results),
            changed_labels=list(dict.fromkeys(r["label"] for r in results if r.get("changed"))),
        )
        diffs = [r["diff"] for r in results if r.get("diff")]
        if diffs:
            result["diff"] = [d for diff in diffs for d in (diff if isinstance(diff, list) else [diff])]
        if failed:
            result.update(failed=True, msg="; ".join(f"{r['dest']}: {r.get('msg', 'failed')}" for r in failed))
        return result

    def _text(self, spec: dict, task_vars: dict) -> str:
        """The file's content, templated on the controller like the template action."""
        if "content" in spec:
            return to_text(spec["content"])
        source = self._find_needle("templates", spec["template"])
        searchpath = [os.path.dirname(source), self._loader.get_basedir()]
        variables = {**task_vars, **(spec.get("vars") or {})}
        variables.setdefault("ansible_managed", _ansible_managed(spec["template"], source))
        templar = self._templar.copy_with_new_env(searchpath=searchpath, available_variables=variables)
        data = trust_as_template(self._loader.get_text_file_contents(source))
        return to_text(templar.template(data, escape_backslashes=False) or "")

    def _render(self, root: str, spec: dict, task_vars: dict) -> dict:
        path = os.path.join(root, spec["dest"].lstrip("/"))
        data = to_bytes(self._text(spec, task_vars))
        mode = int(str(spec["mode"]), 8)
        try:
            with open(path, "rb") as old:
                same = old.read() == data and (os.stat(path).st_mode & 0o7777) == mode
        except FileNotFoundError:
            same = False
        if not same and not self._task.check_mode:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=os.path.dirname(path))
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(temp, mode)
            os.replace(temp, path)
        return {"dest": spec["dest"], "label": spec.get("label", spec["dest"]), "changed": not same}

    def _host_state(self, paths: list[str]) -> dict[str, tuple[int, str, str, str]]:
        """Mode, owner, group and sha1 of every existing path, in one command on the host; {} when
        the command fails (then every file goes through its action, as without this shortcut)."""
        command = "sh -c " + " ".join(shlex.quote(arg) for arg in [_STATE_SCRIPT, "pd_files", *paths])
        run = self._low_level_execute_command(command, sudoable=True)
        lines = to_text(run.get("stdout", "")).splitlines()
        if run.get("rc") != 0 or len(lines) != len(paths):
            return {}
        state = {}
        for path, line in zip(paths, lines, strict=True):
            fields = line.split()
            if len(fields) == 4 and fields[0].isdigit():
                state[path] = (int(fields[0], 8), fields[1], fields[2], fields[3])
        return state

    @staticmethod
    def _unchanged(spec: dict) -> dict:
        return {"dest": spec["dest"], "label": spec.get("label", spec["dest"]), "changed": False}

    def _on_host(self, spec: dict, task_vars: dict) -> dict:
        task = self._task.copy()
        task.args = {k: spec[k] for k in ("dest", "mode", "owner", "group", "validate") if spec.get(k)}
        if "template" in spec:
            task.args["src"] = spec["template"]
            name = "ansible.legacy.template"
        else:
            task.args["content"] = to_text(spec["content"])
            name = "ansible.legacy.copy"
        action = self._shared_loader_obj.action_loader.get(
            name, task=task, connection=self._connection, play_context=self._play_context,
            loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj)
        outcome = action.run(task_vars={**task_vars, **(spec.get("vars") or {})})
        outcome.update(dest=spec["dest"], label=spec.get("label", spec["dest"]))
        return outcome
