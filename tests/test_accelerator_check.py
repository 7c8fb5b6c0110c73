"""benchmarks/accelerator.sh: its CPU dry run prints every figure; the roofline and MFU
formulas and the chip table against hand computations."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import (SHAPES, chip_for, decode_bytes_per_step,  # noqa: E402
                    decode_roofline_tokens_per_s, update_flops)


@pytest.mark.parametrize("kind,name", [("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
                                       ("NVIDIA H200", "NVIDIA H200"),
                                       ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB SXM"),
                                       ("TPU v4", "TPU v4"), ("TPU v5 lite", "TPU v5e"),
                                       ("TPU v5p", "TPU v5p"), ("cpu", None)])
def test_chip_for_device_kind(kind, name):
    chip = chip_for(kind)
    assert (chip.name if chip else None) == name


def test_decode_roofline_counts_weights_once_and_the_kv_cache_per_row():
    cfg = SHAPES["qwen2-0.5b"].replace(param_dtype="bfloat16", dtype="bfloat16")
    assert 490e6 < cfg.num_params < 500e6  # the Qwen2.5-0.5B size
    kv_per_row = 2 * 24 * 2 * 64 * 100 * 2  # K and V, layers, KV heads, head dim, 100 positions
    assert decode_bytes_per_step(cfg, 4, 100) == cfg.num_params * 2 + 4 * kv_per_row
    # batch 1 at 1000 GB/s: bandwidth over the bytes of one step
    assert decode_roofline_tokens_per_s(cfg, 1, 100, 1000) == pytest.approx(
        1e12 / (cfg.num_params * 2 + kv_per_row))


def test_update_flops_runs_the_head_on_completions_only():
    cfg = SHAPES["tiny"]
    head = cfg.vocab_size * cfg.hidden_size
    assert update_flops(cfg, 10, 4) == 6 * ((cfg.num_params - head) * 10 + head * 4)


@pytest.mark.slow
def test_accelerator_script_dry_run_prints_decode_roofline_and_mfu():
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(["bash", "benchmarks/accelerator.sh", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = lines.index(next(x for x in lines if x.startswith("batch")))
    batch, decode, roof, share = lines[header + 1].split()
    assert batch == "2" and float(decode) > 0 and float(roof) > 0 and share.endswith("%")
    assert "(bandwidth: 100 GB/s)" in lines[header]
    assert any("MFU" in x and "of 1.00 TFLOP/s (--peak-tflops)" in x for x in lines)


def test_accelerator_script_refuses_unknown_flags():
    proc = subprocess.run(["bash", "benchmarks/accelerator.sh", "--bogus"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr
