#!/usr/bin/env python3
"""Run `vllm serve MODEL ARG ...` with the installed vLLM, where the venv has
no working `vllm` command (the CPU build ships no `vllm` dist metadata, so its
console script cannot start).

    vllm_serve.py MODEL ARG ...

It builds the same `serve` subcommand parser that `vllm-check-args` uses,
parses, validates and runs the subcommand, so every mode of `vllm serve`
works: the API server, and `--headless` followers of a multi-node instance
(the API server module, `python -m vllm.entrypoints.openai.api_server`,
accepts `--headless` but ignores it: the leader then refuses the follower's
engine). vLLM's CPU platform starts its engines by spawn, which imports this
file again in each child: everything runs under the `__main__` guard.
"""

from __future__ import annotations

import sys

from vllm_check_args import serve_parser  # same directory: the one place the serve parser is built


def _cli_setup(args) -> None:
    """What vLLM's CLI main does before a subcommand (the module moved
    between releases): the spawn default for workers, logging options."""
    import vllm.logger

    try:
        from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    except ImportError:
        from vllm.entrypoints.utils import cli_env_setup
    cli_env_setup()
    configure = getattr(vllm.logger, "configure_logging_from_args", None)
    if configure is not None:
        configure(args)


def main(argv: list[str]) -> int:
    parser, serve = serve_parser()
    args = parser.parse_args(["serve", *argv])
    _cli_setup(args)
    serve.validate(args)
    serve.cmd(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
