#!/usr/bin/env python3
"""Check vLLM argument lists with the installed vLLM's own `serve` parser.

    vllm_check_args.py --plan plan.json          # every node of a plan
    vllm_check_args.py --model M -- ARG ...      # one argument list

Run it with the Python of a vLLM install. It imports no GPU code: it builds
the `vllm serve` argument parser, parses, and runs the subcommand's own
validation, so an unknown flag, a bad choice or invalid JSON fails exactly as
`vllm serve` would. Exit 0 when all pass, 1 with vLLM's message otherwise,
2 when vLLM is not importable or its version differs from the plan's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")


def serve_parser():
    """The `vllm serve` argument parser and its subcommand (validate, cmd)."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm")
    subparsers = parser.add_subparsers(dest="subparser")
    ServeSubcommand().subparser_init(subparsers)
    return parser, ServeSubcommand()


def check(parser, serve, model: str, args: list[str]) -> str | None:
    """None when vLLM accepts `vllm serve MODEL ARGS`, else its message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed = parser.parse_args(["serve", model, *args])
            serve.validate(parsed)
    except SystemExit as exc:
        if exc.code in (0, None):
            return None
        # argparse prints usage, then "error: ..." and, for config JSON, the
        # pydantic details on the following lines: keep those, on one line.
        lines = [line.strip() for line in err.getvalue().splitlines() if line.strip()]
        start = next((i for i, line in enumerate(lines) if "error:" in line), 0)
        kept = [line for line in lines[start:] if not line.startswith("For further information")]
        return " ".join(kept) if kept else f"exit {exc.code}"
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def main(argv: list[str]) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    cli.add_argument("--plan", help="plan.json from render.yml")
    cli.add_argument("--model", default="/models/model", help="model path for a single list")
    cli.add_argument("args", nargs="*", help="one argument list (after --)")
    opts = cli.parse_args(argv)
    try:
        import vllm
    except ImportError as exc:
        print(f"vLLM is not importable from {sys.executable}: {exc}", file=sys.stderr)
        return 2
    installed = str(vllm.__version__).split("+")[0]
    parser, serve = serve_parser()
    failures = 0
    if opts.plan:
        with open(opts.plan, encoding="utf-8") as handle:
            plan = json.load(handle)
        if plan["vllm_version"] != installed:
            print(f"plan is for vLLM {plan['vllm_version']}, this parser is vLLM {installed}", file=sys.stderr)
            return 2
        for instance in plan["instances"]:
            for node in instance["nodes"]:
                problem = check(parser, serve, node["model"], node["serve_args"])
                where = f"{instance['name']} on {node['host']}"
                status = f"FAIL vLLM {installed}: {where}: {problem}" if problem else f"ok   vLLM {installed}: {where}"
                print(status)
                failures += bool(problem)
    else:
        problem = check(parser, serve, opts.model, opts.args)
        print(f"FAIL vLLM {installed}: {problem}" if problem else f"ok   vLLM {installed}")
        failures += bool(problem)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
