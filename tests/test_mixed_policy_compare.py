"""A short run of the whole tiny comparison (a few steps of every method and of corrected
SFT-then-RL, one seed) on the real stack, and the FLOPs it reports checked against its own
token counts."""
import json
import os
import subprocess
import sys

import pytest

from conftest import AFFECTED, ROOT, require_release

pytest.importorskip("trl")


def test_the_comparison_runs_every_method_and_reports_flops(tmp_path):
    env = require_release(AFFECTED)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    out = tmp_path / "results"
    configs = ["sft_rl_fixed", "luffy", "srft", "relift", "hpt", "prefix_rft"]
    proc = subprocess.run([sys.executable, "-m", "examples.mixed_policy.compare", "--smoke", "--seeds", "0",
                           "--configs", *configs, "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    records = {r["config"]: r for r in results["records"]}
    assert set(records) == set(configs)
    assert (out / "accuracy_vs_flops.png").stat().st_size > 0
    table = (out / "results.md").read_text()
    assert all(label in table for label in ("LUFFY", "SRFT", "ReLIFT", "HPT", "Prefix-RFT", "SFT→RL, corrected"))
    n = results["parameters"]
    for config, record in records.items():
        tokens = record["tokens"]
        assert record["flops"] == n * (6 * tokens["sft"] + 8 * tokens["on_policy"] + 6 * tokens["off_policy"])
        assert tokens["on_policy"] > 0
        assert 0.0 <= record["accuracy"] <= 1.0
    assert records["sft_rl_fixed"]["tokens"]["sft"] == results["sft_tokens_per_epoch"]
    for config in ("luffy", "srft", "hpt", "prefix_rft"):  # each puts expert tokens in its RL batches
        assert records[config]["tokens"]["off_policy"] > 0
