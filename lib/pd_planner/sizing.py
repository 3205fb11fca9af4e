"""How many prefill GPUs per decode GPU a workload needs, from published rates.

A prefill GPU turns input tokens into KV cache at some rate, a decode GPU
emits output tokens at another. For requests of `isl` input and `osl` output
tokens, serving R requests per second takes R*isl/prefill_rate prefill GPUs and
R*osl/decode_rate decode GPUs, so the balanced ratio is

    prefill : decode = (isl / prefill_rate) : (osl / decode_rate)

The default rates are the published vLLM GB200 figures (DeepSeek-R1 NVFP4,
2K in / 2K out, DP+EP on both pools): 26.2K prefill and 10.1K decode tokens
per GPU per second. They were measured at one operating point; decode
throughput falls with longer contexts and tighter latency targets, so the
ratio is a starting point to measure from, not a guarantee.

    python -m pd_planner.sizing --isl 2048 --osl 2048 [--prefill-gpus 8 --decode-gpus 8]
    make size ISL=2048 OSL=2048 [PREFILL_GPUS=8 DECODE_GPUS=8]
"""

from __future__ import annotations

import argparse
import sys

from .errors import PlanError

# vLLM blog "dsr1-gb200-part1" (2026-02-03), tokens per GPU per second.
PREFILL_TPGS = 26200.0
DECODE_TPGS = 10100.0
# An inventory whose prefill:decode ratio is off by more than this factor
# (either way) gets a warning.
DEFAULT_TOLERANCE = 1.5


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise PlanError(f"{name} is {value!r}; valid: a number above 0")
    return float(value)


def balanced_ratio(isl: float, osl: float, prefill_tpgs: float = PREFILL_TPGS,
                   decode_tpgs: float = DECODE_TPGS) -> float:
    """Prefill GPUs per decode GPU that keep both pools equally busy."""
    isl, osl = _positive(isl, "isl"), _positive(osl, "osl")
    prefill_tpgs = _positive(prefill_tpgs, "prefill tokens per GPU-second")
    decode_tpgs = _positive(decode_tpgs, "decode tokens per GPU-second")
    return (isl / prefill_tpgs) / (osl / decode_tpgs)


def split(total_gpus: int, ratio: float, prefill_step: int = 1, decode_step: int = 1) -> tuple[int, int]:
    """(prefill, decode) GPUs out of total_gpus closest to `ratio`, in whole
    instances of prefill_step and decode_step GPUs, at least one of each."""
    best: tuple[float, int, int] | None = None
    for prefill in range(prefill_step, total_gpus, prefill_step):
        decode = (total_gpus - prefill) // decode_step * decode_step
        if decode < decode_step:
            continue
        # Distance on a log scale: 2x too many and 2x too few weigh the same.
        off = max(prefill / decode / ratio, ratio * decode / prefill)
        if best is None or off < best[0]:
            best = (off, prefill, decode)
    if best is None:
        raise PlanError(f"{total_gpus} GPUs cannot hold one prefill instance of {prefill_step} "
                        f"and one decode instance of {decode_step} GPUs")
    return best[1], best[2]


def report(isl: float, osl: float, prefill_gpus: int | None = None, decode_gpus: int | None = None,
           prefill_tpgs: float = PREFILL_TPGS, decode_tpgs: float = DECODE_TPGS,
           tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """The balanced ratio and, for an inventory's GPU counts, what it sustains
    and a warning when its ratio is more than `tolerance` off."""
    ratio = balanced_ratio(isl, osl, prefill_tpgs, decode_tpgs)
    result: dict = {
        "isl": isl, "osl": osl, "prefill_tpgs": prefill_tpgs, "decode_tpgs": decode_tpgs,
        "balanced_ratio": round(ratio, 3),
        "text": (f"{isl:g} in / {osl:g} out at {prefill_tpgs:g} prefill and {decode_tpgs:g} decode "
                 f"tokens per GPU-second: {ratio:.2f} prefill GPU per decode GPU "
                 f"(1 : {1 / ratio:.2f})"),
        "warning": None,
    }
    if prefill_gpus is None or decode_gpus is None:
        return result
    _positive(prefill_gpus, "prefill GPUs")
    _positive(decode_gpus, "decode GPUs")
    prefill_rps = prefill_gpus * prefill_tpgs / isl
    decode_rps = decode_gpus * decode_tpgs / osl
    actual = prefill_gpus / decode_gpus
    bound = "prefill" if prefill_rps < decode_rps else "decode"
    result.update({
        "prefill_gpus": prefill_gpus,
        "decode_gpus": decode_gpus,
        "ratio": round(actual, 3),
        "prefill_requests_per_s": round(prefill_rps, 2),
        "decode_requests_per_s": round(decode_rps, 2),
        "requests_per_s": round(min(prefill_rps, decode_rps), 2),
        "bound_by": bound,
    })
    off = max(actual / ratio, ratio / actual)
    if off > tolerance:
        over = "prefill" if actual > ratio else "decode"
        idle = 1 - min(prefill_rps, decode_rps) / max(prefill_rps, decode_rps)
        balanced = split(prefill_gpus + decode_gpus, ratio)
        result["warning"] = (
            f"the inventory has {prefill_gpus} prefill : {decode_gpus} decode GPUs ({actual:.2f}), "
            f"{off:.1f}x more {over} than {isl:g}/{osl:g}-token requests need ({ratio:.2f}); "
            f"about {idle:.0%} of the {over} pool's capacity would idle. The same "
            f"{prefill_gpus + decode_gpus} GPUs balance near {balanced[0]} prefill : {balanced[1]} decode"
        )
    return result


WORKLOAD_KEYS = ("isl", "osl")


def plan_sizing(workload: object, instances: list[dict], warnings: list) -> dict | None:
    """The plan's `sizing`: pd_workload ({isl, osl}) against the inventory's
    prefill and decode GPUs, and a warning when the ratio is far off. None
    when pd_workload is unset."""
    if workload in (None, {}):
        return None
    if not isinstance(workload, dict) or set(workload) - set(WORKLOAD_KEYS) or set(WORKLOAD_KEYS) - set(workload):
        raise PlanError(f"pd_workload is {workload!r}; valid: {{isl: <mean input tokens>, "
                        "osl: <mean output tokens>}, both numbers above 0")
    gpus = {pool: sum(inst["gpus_total"] for inst in instances if inst["pool"] == pool)
            for pool in ("prefill", "decode")}
    try:
        result = report(workload["isl"], workload["osl"], gpus["prefill"] or None, gpus["decode"] or None)
    except PlanError as exc:
        raise PlanError(f"pd_workload: {exc}") from None
    if result["warning"]:
        warnings.append(f"pd_workload: {result['warning']} (make size ISL=.. OSL=..; docs/gb200-layout.md)")
    return {key: value for key, value in result.items() if key not in ("text", "warning")} | {
        "summary": result["text"]}


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description="prefill:decode GPU ratio from input/output lengths")
    cli.add_argument("--isl", type=float, required=True, help="mean input tokens per request")
    cli.add_argument("--osl", type=float, required=True, help="mean output tokens per request")
    cli.add_argument("--prefill-gpus", type=int, help="prefill GPUs of an inventory")
    cli.add_argument("--decode-gpus", type=int, help="decode GPUs of an inventory")
    cli.add_argument("--prefill-tpgs", type=float, default=PREFILL_TPGS)
    cli.add_argument("--decode-tpgs", type=float, default=DECODE_TPGS)
    args = cli.parse_args(argv)
    try:
        result = report(args.isl, args.osl, args.prefill_gpus, args.decode_gpus, args.prefill_tpgs, args.decode_tpgs)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result["text"])
    if "requests_per_s" in result:
        print(f"inventory: {result['prefill_gpus']} prefill : {result['decode_gpus']} decode GPUs sustain about "
              f"{result['requests_per_s']} requests/s (bound by {result['bound_by']})")
    if result["warning"]:
        print(f"warning: {result['warning']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
