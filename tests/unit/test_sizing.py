"""The sizing aid: prefill:decode GPU ratio from input/output lengths and the
published GB200 rates (26.2K prefill / 10.1K decode tokens per GPU-second)."""

from __future__ import annotations

import pytest
from pd_planner import PlanError
from pd_planner.sizing import balanced_ratio, main, report, split


def test_the_published_workload_needs_about_one_prefill_gpu_per_2_6_decode_gpus():
    assert balanced_ratio(2048, 2048) == pytest.approx(10100 / 26200)
    assert report(2048, 2048)["text"].endswith("0.39 prefill GPU per decode GPU (1 : 2.59)")


def test_long_inputs_short_outputs_need_more_prefill():
    # 8K in / 256 out: prefill-heavy (RAG, summarisation).
    assert balanced_ratio(8192, 256) == pytest.approx((8192 / 26200) / (256 / 10100))
    assert balanced_ratio(8192, 256) > 10


def test_the_published_shape_warns_that_prefill_is_over_provisioned():
    """8 prefill : 8 decode GPUs for 2K/2K: 2.6x more prefill than needed."""
    result = report(2048, 2048, prefill_gpus=8, decode_gpus=8)
    assert result["bound_by"] == "decode"
    assert result["requests_per_s"] == pytest.approx(8 * 10100 / 2048, abs=0.01)
    assert result["prefill_requests_per_s"] == pytest.approx(8 * 26200 / 2048, abs=0.01)
    warning = result["warning"]
    assert "8 prefill : 8 decode GPUs (1.00)" in warning
    assert "2.6x more prefill than 2048/2048-token requests need (0.39)" in warning
    assert "about 61% of the prefill pool's capacity would idle" in warning
    assert "balance near 4 prefill : 12 decode" in warning


def test_a_ratio_within_tolerance_does_not_warn():
    assert report(2048, 2048, prefill_gpus=4, decode_gpus=12)["warning"] is None
    assert report(2048, 2048, prefill_gpus=4, decode_gpus=8, tolerance=1.5)["warning"] is None


def test_too_little_prefill_warns_too():
    result = report(8192, 256, prefill_gpus=4, decode_gpus=8)
    assert result["bound_by"] == "prefill"
    assert "more decode than" in result["warning"]


def test_split_keeps_whole_instances():
    # GB200: prefill instances of 4 GPUs (one tray), decode of 8 (two trays).
    assert split(24, balanced_ratio(2048, 2048), prefill_step=4, decode_step=8) == (8, 16)
    with pytest.raises(PlanError, match="cannot hold one prefill instance of 8"):
        split(8, 1.0, prefill_step=8, decode_step=8)


@pytest.mark.parametrize(("isl", "osl"), [(0, 2048), (2048, -1), (True, 2048)])
def test_bad_lengths_name_the_variable(isl, osl):
    with pytest.raises(PlanError, match=r"(isl|osl) is .*; valid: a number above 0"):
        balanced_ratio(isl, osl)


def test_command_line(capsys):
    assert main(["--isl", "2048", "--osl", "2048", "--prefill-gpus", "8", "--decode-gpus", "8"]) == 0
    out = capsys.readouterr().out
    assert "0.39 prefill GPU per decode GPU" in out
    assert "sustain about 39.45 requests/s (bound by decode)" in out
    assert out.splitlines()[-1].startswith("warning: the inventory has 8 prefill : 8 decode GPUs")
    assert main(["--isl", "0", "--osl", "1"]) == 2
