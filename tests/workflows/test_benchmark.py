"""``medseg benchmark``: FLOPs against hand counts, the FLOP floor and ratios as defined, peak
memory of a known allocation, the ONNX rows' agreement with eager PyTorch, the command's JSON
against its schema, and the README section generated from the committed results file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from medseg.cli import main
from medseg.errors import ConfigError
from medseg.machine import peak_memory
from medseg.models import count_parameters, create_model
from medseg.workflows.benchmark import (
    README_COMMAND,
    benchmark,
    benchmark_model,
    count_flops,
    markdown_table,
    network_setup,
    update_readme,
    validate,
)
from medseg.workflows.reproduce import README_BEGIN, README_END

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "benchmark-cpu-2core.json"


def test_flops_of_a_convolution_and_a_linear_layer_are_the_hand_counts():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    assert count_flops(conv, torch.zeros(1, 1, 8, 8)) == 2 * 1 * 2 * 9 * 8 * 8
    linear = nn.Linear(5, 3)
    assert count_flops(linear, torch.zeros(4, 5)) == 2 * 4 * 5 * 3
    assert conv.training  # the count runs in eval mode and restores the flag


def test_peak_memory_sees_a_known_allocation():
    assert peak_memory(lambda: torch.empty(262144, dtype=torch.float32)) >= 2**20  # 1 MiB
    assert peak_memory(lambda: None) == 0


def test_rows_eager_onnx_int8_with_floor_and_ratios_as_defined():
    torch.manual_seed(0)
    model = create_model("unet", base_channels=8, depth=2)
    rows = benchmark_model(model, (2, 1, 32, 32), warmup=1, repeats=2, flops_per_s=1e10, network="unet")
    assert [r["runtime"] for r in rows] == ["eager", "onnx-fp32", "onnx-int8"]
    flops = count_flops(model, torch.zeros(2, 1, 32, 32))
    for r in rows:
        assert r["input"] == [2, 1, 32, 32] and r["parameters"] == count_parameters(model)
        assert r["gflops"] == pytest.approx(flops / 1e9, abs=1e-4)
        assert r["floor_ms"] == pytest.approx(1000 * r["gflops"] * 1e9 / 1e10, rel=1e-3)
        assert r["floor_ratio"] == pytest.approx(r["latency_ms"] / r["floor_ms"], rel=0.01, abs=1e-3)
        assert r["throughput"] == pytest.approx(2000 / r["latency_ms"], rel=0.01)
    eager, fp32, int8 = rows
    assert eager["peak_mb"] > 0 and eager["file_mb"] is None
    assert fp32["rel_error"] < 1e-4  # the exported graph is the network
    assert int8["file_mb"] < fp32["file_mb"]  # int8 weights
    assert 0 < int8["rel_error"] < 0.5  # quantised: close, not equal
    validate({"tool": "medseg benchmark", "machine": {"matmul_flops_per_s": 1e10, "device": "cpu"}, "rows": rows})


def test_bad_shapes_and_requests_are_refused():
    model = create_model("unet", base_channels=4, depth=2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        benchmark_model(model, (1, 32, 32), onnx=False)
    with pytest.raises(ValueError, match="repeats"):
        benchmark_model(model, (1, 1, 32, 32), repeats=0, onnx=False)
    with pytest.raises(ValueError, match="one of"):
        benchmark([], checkpoint=None)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            benchmark_model(model, (1, 1, 32, 32), device="cuda", onnx=False)
    with pytest.raises(ConfigError, match="rows/0/runtime"):
        validate(
            {
                "tool": "medseg benchmark",
                "machine": {"matmul_flops_per_s": 1.0, "device": "cpu"},
                "rows": [
                    {
                        "network": "x",
                        "runtime": "tensorrt",
                        "input": [1, 1, 8, 8],
                        "parameters": 1,
                        "gflops": 0.0,
                        "latency_ms": 1.0,
                        "throughput": 1.0,
                        "floor_ms": 0.0,
                        "floor_ratio": None,
                    }
                ],
            }
        )


def test_network_setup_takes_the_recipe_size_rounded_to_the_divisor():
    with torch.device("meta"):
        _, hw, recipe = network_setup("dscnet")
    assert recipe == "drive/dscnet" and hw == (224, 224)  # drive/dscnet.yaml eval.roi_size
    with torch.device("meta"):
        _, hw, _ = network_setup("dscnet", size=(30, 41))
    assert hw == (32, 48)  # DSCNet needs multiples of 8


def test_volume_networks_are_benchmarked_on_volumes_eager_only():
    with torch.device("meta"):
        _, sides, _ = network_setup("unet3d", size=(20,))
    assert sides == (32, 32, 32)  # one side for the three axes, rounded up to the 16 of four poolings
    torch.manual_seed(0)
    net = create_model("unet3d", features=[2, 2, 4, 4, 8, 2])
    (row,) = benchmark_model(net, (1, 1, 32, 32, 32), repeats=1, warmup=0, flops_per_s=1e11)
    assert row["runtime"] == "eager" and row["input"] == [1, 1, 32, 32, 32] and row["gflops"] > 0
    validate({"tool": "medseg benchmark", "machine": {"matmul_flops_per_s": 1e11, "device": "cpu"}, "rows": [row]})
    with pytest.raises(ValueError, match=r"\(N, C, D, H, W\)"):
        benchmark_model(net, (1, 1, 32, 32), repeats=1)


def test_command_writes_a_valid_file_and_its_readme_section(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "benchmark",
                "--network",
                "dscnet",
                "--size",
                "32",
                "32",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--no-onnx",
                "-o",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    validate(doc)
    (row,) = doc["rows"]
    assert row["network"] == "dscnet" and row["recipe"] == "drive/dscnet" and row["input"] == [1, 1, 32, 32]
    assert "| dscnet | 1x1x32x32 | eager |" in capsys.readouterr().out
    begin, end = (m.format(name=out.name, command=README_COMMAND) for m in (README_BEGIN, README_END))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{begin}\nold\n{end}\nrest\n")
    assert main(["benchmark", "-o", str(out), "--readme", str(readme)]) == 0
    assert readme.read_text() == f"intro\n{begin}\n{markdown_table(doc)}{end}\nrest\n"
    capsys.readouterr()
    assert main(["benchmark"]) == 2
    assert "give --network" in capsys.readouterr().err


def test_readme_benchmark_table_is_generated_from_the_committed_results(tmp_path):
    if not RESULTS.is_file():
        pytest.fail(f"{RESULTS} missing: run medseg benchmark --all -o {RESULTS.relative_to(ROOT)}")
    readme = tmp_path / "README.md"
    shutil.copyfile(ROOT / "README.md", readme)
    assert update_readme(readme, RESULTS) is False, (
        "README's benchmark table differs from benchmarks/results/benchmark-cpu-2core.json: run "
        "medseg benchmark -o benchmarks/results/benchmark-cpu-2core.json --readme README.md"
    )


def test_readme_has_each_section_and_generated_table_once():
    """A README edited by hand and by --readme keeps one copy of each section and of each
    generated table (one commit once left a second, stale copy of half the README behind)."""
    text = (ROOT / "README.md").read_text()
    headings, in_code = [], False
    for line in text.splitlines():
        in_code ^= line.startswith("```")
        if not in_code and line.startswith("#"):
            headings.append(line)
    assert len(headings) == len(set(headings)), sorted(h for h in headings if headings.count(h) > 1)
    for marker in ("`medseg benchmark --readme`: begin", "`medseg reproduce --readme`: begin"):
        assert text.count(marker) == 1, marker
