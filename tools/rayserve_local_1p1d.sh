#!/bin/bash
# A real 1P1D Ray Serve run on one machine (docs/rayserve.md, "Status"): the
# lab plan's Serve config in Ray mode, Ray 2.60.0 from .venv-ray with the CPU
# vLLM 0.32.0 of .venv-vllm, NIXL 1.5.1 from the lab wheelhouse
# (kv_buffer_device cpu), a local head, `serve deploy`, then
# playbooks/files/pd_verify_ray.py (verify.yml's Ray check: Serve health, a
# chat and a streaming chat through the ingress, per-pool counts and the KV
# NIXL moved, from Ray's metrics port); then Debian's Prometheus with the
# plan's Ray-mode scrape jobs (vllm:* per pool after relabelling), and a rerun
# to scale: the plan with a second prefill host deployed, every running
# replica must keep its id and pid, verify again. Exits non-zero at the first
# check that fails. Heavy (~12 min): run it under the shared lock,
#   flock /tmp/pd-heavy.lock timeout -k 30 1800 tools/rayserve_local_1p1d.sh
# Needs: make ray-venv, make vllm-venv, .lab/wheelhouse (nixl wheels) and
# .lab/model-src/tiny-llama. Everything lives under $WORK (default
# /tmp/rayserve-1p1d); Ray is stopped at the end.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/rayserve-1p1d}
B=$ROOT/.venv-ray/bin
PORT_BASE=${PORT_BASE:-28000}   # serve: +0, dashboard: +265, metrics: +385
mkdir -p "$WORK"
# NIXL (and vLLM 0.32.0's FastAPI, see roles/ray_cluster/defaults) outside the venvs.
if [ ! -d "$WORK/py/nixl" ]; then
  "$B/pip" install -q --no-deps --target "$WORK/py" "$ROOT"/.lab/wheelhouse/nixl-1.5.1-*.whl \
    "$ROOT"/.lab/wheelhouse/nixl_cu12-1.5.1-*.whl || exit 1
fi
if [ ! -d "$WORK/py/fastapi" ]; then
  cp -r "$ROOT"/.venv-vllm/lib/python3.11/site-packages/fastapi "$ROOT"/.venv-vllm/lib/python3.11/site-packages/fastapi-0.136.3.dist-info "$WORK/py/" || exit 1
fi
# The lab plan's Serve config in Ray mode, with this machine's proxy address, model path and CPU env.
PYTHONPATH=$ROOT/lib:$ROOT/tests "$ROOT/.venv/bin/python" - "$WORK/serve.yaml" "$ROOT" "$PORT_BASE" <<'EOF' || exit 1
import sys, yaml
from pathlib import Path
from conftest import inventory_spec
from pd_planner import build_plan
out, root, base = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
spec = {**inventory_spec(root / "inventories" / "lab"), "serving": {"mode": "rayserve"}}
def local_serve_config(plan_spec):
    """The plan's Serve config with this machine's proxy, model path and CPU env."""
    config = build_plan(plan_spec)["rayserve"]["serve_config"]
    config["http_options"] = {"host": "127.0.0.1", "port": base}
    for pool in ("prefill", "decode"):
        llm = config["applications"][0]["args"][f"{pool}_config"]
        llm["model_loading_config"]["model_source"] = str(root / ".lab" / "model-src" / "tiny-llama")
        llm["runtime_env"]["env_vars"].update({"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_OMP_THREADS_BIND": "nobind"})
    return config
Path(out).write_text(yaml.safe_dump(local_serve_config(spec), sort_keys=False))
# The rerun to scale: the same inventory with a second prefill host (what
# appending one to hosts.yml gives), same local substitutions.
larger = {**spec, "hosts": {**spec["hosts"], "lab-prefill-1": {**spec["hosts"]["lab-prefill-0"]}},
          "groups": {**spec["groups"], "prefill": [*spec["groups"]["prefill"], "lab-prefill-1"]}}
larger["hosts"]["lab-prefill-1"]["address"] = "10.89.60.99"
Path(out).with_name("serve-2p.yaml").write_text(yaml.safe_dump(local_serve_config(larger), sort_keys=False))
# Prometheus with the plan's scrape jobs of Ray mode (relabel included), every
# target pointed at this machine's one Ray metrics port.
jobs = build_plan(spec)["scrape"]["jobs"]
prom = {"global": {"scrape_interval": "5s"}, "scrape_configs": [
    {"job_name": job["job_name"], "metrics_path": job.get("metrics_path", "/metrics"),
     **({"metric_relabel_configs": job["metric_relabel_configs"]} if job.get("metric_relabel_configs") else {}),
     "static_configs": [{"targets": [f"127.0.0.1:{base + 385}"], "labels": t["labels"]} for t in job["targets"]]}
    for job in jobs if job["job_name"] in ("vllm-prefill", "vllm-decode", "ray-head")]}
Path(out).with_name("prometheus.yml").write_text(yaml.safe_dump(prom, sort_keys=False))
EOF
cat > "$WORK/plan.json" <<EOF
{"rayserve": {"url": "http://127.0.0.1:$PORT_BASE", "dashboard_url": "http://127.0.0.1:$((PORT_BASE + 265))"},
 "scrape": {"jobs": []}, "model": {"served_name": "tiny-llama"}}
EOF
export RAY_USAGE_STATS_ENABLED=0 VLLM_TARGET_DEVICE=cpu PYTHONPATH=$WORK/py
DASH=http://127.0.0.1:$((PORT_BASE + 265))
date -u; echo "== ray start"
# 16 logical CPUs: a CPU engine replica takes 2 (engine + replica actor), the
# ingress 1; pd_prefill 2: room for the second prefill replica of the scale step.
setsid "$B/ray" start --head --block --node-ip-address 127.0.0.1 --port $((PORT_BASE - 1621)) \
  --dashboard-host 127.0.0.1 --dashboard-port $((PORT_BASE + 265)) --ray-client-server-port $((PORT_BASE - 7999)) \
  --metrics-export-port $((PORT_BASE + 385)) --num-cpus 16 --num-gpus 0 \
  --resources '{"pd_prefill":2,"pd_decode":1}' --temp-dir "$WORK/t" --disable-usage-stats > "$WORK/ray-head.log" 2>&1 &
RAYPID=$!
trap 'kill -TERM -- -$RAYPID 2>/dev/null; sleep 20; kill -KILL -- -$RAYPID 2>/dev/null; "$B/ray" stop --force >/dev/null 2>&1' EXIT
for _ in $(seq 90); do curl -sf "$DASH/api/version" >/dev/null && break; sleep 2; done
echo "== serve deploy"; date -u
"$B/serve" deploy "$WORK/serve.yaml" -a "$DASH" 2>&1 | tail -2
started=$(date +%s)
for _ in $(seq 90); do
  st=$("$B/serve" status -a "$DASH" 2>&1 | grep -A2 "^  pd:" | grep "status:" | head -1)
  echo "$(date -u +%T) $st"
  case "$st" in *RUNNING*|*DEPLOY_FAILED*) break;; esac
  sleep 10
done
echo "deploy to RUNNING: $(( $(date +%s) - started )) s"
"$B/serve" status -a "$DASH" 2>&1 | head -30
echo "== verify (playbooks/files/pd_verify_ray.py)"; date -u
timeout 600 "$B/python" "$ROOT/playbooks/files/pd_verify_ray.py" --plan "$WORK/plan.json" \
  --metrics-url "http://127.0.0.1:$((PORT_BASE + 385))/metrics" --max-tokens 16 --timeout 300
rc=$?
date -u
curl -s -m 20 "http://127.0.0.1:$((PORT_BASE + 385))/metrics" > "$WORK/metrics.txt"
grep -o '^ray_vllm_[a-z_0-9]*' "$WORK/metrics.txt" | sort -u | tr '\n' ' '; echo
grep -rh 'KV Transfer metrics\|external prefix' "$WORK"/t/session_latest/logs/ 2>/dev/null | tail -4 | cut -c1-300
[ $rc = 0 ] || exit $rc

echo "== Prometheus (Debian's, .cache/prometheus) with the plan's Ray-mode scrape jobs"
PROM=http://127.0.0.1:$((PORT_BASE + 390))
setsid "$ROOT/.cache/prometheus/usr/bin/prometheus" --config.file "$WORK/prometheus.yml" \
  --storage.tsdb.path "$WORK/prom" --web.listen-address 127.0.0.1:$((PORT_BASE + 390)) > "$WORK/prometheus.log" 2>&1 &
PROMPID=$!
trap 'kill -TERM $PROMPID 2>/dev/null; kill -TERM -- -$RAYPID 2>/dev/null; sleep 20; kill -KILL -- -$RAYPID 2>/dev/null; "$B/ray" stop --force >/dev/null 2>&1' EXIT
sleep 20
curl -s -m 10 "$PROM/api/v1/query" --data-urlencode 'query=vllm:request_success_total' | "$B/python" -c '
import json, sys
series = json.load(sys.stdin)["data"]["result"]
for s in series:
    print("prometheus", s["metric"]["__name__"], s["metric"].get("job"), "pool=" + s["metric"].get("pool", ""), s["value"][1])
sys.exit(0 if any(s["metric"].get("job") == "vllm-prefill" and s["metric"].get("pool") == "prefill" for s in series) else 1)
' || { echo "FAIL: no vllm:request_success_total with job vllm-prefill, pool prefill in Prometheus"; exit 1; }

echo "== rerun to scale: prefill 1 -> 2 replicas (serve deploy of the plan with a second prefill host)"
replicas() {
  curl -s -m 20 "$DASH/api/serve/applications/" | "$B/python" -c '
import json, sys
app = json.load(sys.stdin)["applications"]["pd"]
print(json.dumps({name: sorted([r["replica_id"], r.get("pid"), r["state"]] for r in d["replicas"])
                  for name, d in app["deployments"].items()}))'
}
before=$(replicas); echo "before: $before"
"$B/serve" deploy "$WORK/serve-2p.yaml" -a "$DASH" 2>&1 | tail -1
started=$(date +%s)
for _ in $(seq 90); do
  now=$(replicas)
  "$B/python" -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if [r[2] for r in d["Prefill:prefill"]] == ["RUNNING"]*2 else 1)' "$now" && break
  sleep 10
done
echo "scale-out to 2 RUNNING prefill replicas: $(( $(date +%s) - started )) s"
echo "after:  $now"
"$B/python" - "$before" "$now" <<'PY' || exit 1
import json, sys
before, after = json.loads(sys.argv[1]), json.loads(sys.argv[2])
kept = all(r in after[name] for name, rs in before.items() for r in rs)
print("every replica running before runs on (same replica id and pid):", kept)
print("prefill replicas:", len(after["Prefill:prefill"]))
sys.exit(0 if kept and len(after["Prefill:prefill"]) == 2 else 1)
PY
echo "== verify after the scale"
timeout 600 "$B/python" "$ROOT/playbooks/files/pd_verify_ray.py" --plan "$WORK/plan.json" \
  --metrics-url "http://127.0.0.1:$((PORT_BASE + 385))/metrics" --max-tokens 16 --timeout 300
rc=$?
date -u
exit $rc
