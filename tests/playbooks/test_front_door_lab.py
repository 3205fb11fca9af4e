"""The front door of a running lab (`make lab`, inventories/lab's
front_door group on lab-ctl), from the lab host, which is a client there:
the admin API is refused, a request without the key gets 401, one with the
key is served through the router with KV transferred, and the router still
lists its workers afterwards. Runs when PD_LAB_FRONT_DOOR names the front
door (e.g. http://10.89.60.5:8080); skipped otherwise."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest
import yaml
from conftest import ROOT

FRONT_DOOR = os.environ.get("PD_LAB_FRONT_DOOR", "")
pytestmark = pytest.mark.skipif(not FRONT_DOOR, reason="PD_LAB_FRONT_DOOR not set (a running lab's front door)")
LAB_VARS = yaml.safe_load((ROOT / "inventories" / "lab" / "group_vars" / "front_door.yml").read_text())
KEY = LAB_VARS["pd_front_door_api_keys"][0]
MODEL = yaml.safe_load((ROOT / "inventories" / "lab" / "group_vars" / "all" / "model.yml").read_text())[
    "pd_model"]["served_name"]


def call(method: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(FRONT_DOOR + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/remove_worker?url=http://10.89.60.21:8200"), ("POST", "/add_worker?url=http://10.89.60.22:8200"),
    ("POST", "/flush_cache"), ("GET", "/workers"), ("GET", "/list_workers"),
])
def test_admin_api_is_refused_to_a_client(method, path):
    assert call(method, path, key=KEY)[0] == 403


def test_no_key_or_a_wrong_key_gets_401():
    assert call("POST", "/v1/chat/completions", CHAT)[0] == 401
    assert call("POST", "/v1/chat/completions", CHAT, key="wrong-key-0123456789abcdef")[0] == 401


def test_a_client_with_its_key_is_served_through_the_router():
    status, body = call("POST", "/v1/chat/completions", CHAT, key=KEY)
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] is not None
    assert call("GET", "/health")[0] == 200
