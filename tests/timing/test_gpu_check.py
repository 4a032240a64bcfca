"""benchmarks/gpu_check.py in its tiny CPU form, so the GPU check cannot rot (issue 20)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # ~15-30 s of CPU time on 2 cores (a fit, a resume, a step of every method)
def test_gpu_check_runs_on_the_cpu_with_cuda_checks_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    status = _gpu_check().main(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    lines = json.loads((tmp_path / "gpu_check.json").read_text())
    verdicts = {(line["check"], line["verdict"]) for line in lines}
    assert status == 0, out
    for check in ("collectives", "step", "resume"):
        assert (check, "PASS") in verdicts, out
    for check in ("compile", "autoattack", "throughput"):
        assert (check, "SKIP") in verdicts, out
    assert not any(line["verdict"] == "FAIL" for line in lines)
    assert "SUMMARY" in out and " 0 FAIL" in out


def test_gpu_check_exits_non_zero_on_a_fail(tmp_path, monkeypatch, capsys):
    module = _gpu_check()

    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(
        module, "CHECKS", [("env", module.check_env, False), ("broken", broken, False)]
    )
    assert module.main(["--device", "cpu", "--tiny"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  broken      RuntimeError: boom" in out and "1 FAIL" in out
