"""benchmarks/compare_runs.py: results compared exactly, machine measurements left out."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("compare_runs", REPO / "benchmarks" / "compare_runs.py")
compare_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_runs)

BEFORE = {
    "levels": {"levels": [{"t": 0.0, "mig": 0.1, "mig_elapsed_s": 1.0}]},
    "generation": {"ddim": {"fid": 3.0, "timing": {"samples_per_s": 10.0, "sample_seconds": 2.0}}},
    "timings": {"train_vae": {"seconds": 5.0}},
    "versions": {"git_commit": "a"},
    "config": {"vae": {"lr": 0.001}},
}


def _run(tmp_path: Path, after: dict) -> tuple[int, str]:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(BEFORE))
    b.write_text(json.dumps(after))
    code = compare_runs.main([str(a), str(b), "--out", str(tmp_path / "r.md")])
    return code, (tmp_path / "r.md").read_text()


def test_times_versions_and_new_options_do_not_count(tmp_path: Path) -> None:
    after = json.loads(json.dumps(BEFORE))
    after["levels"]["levels"][0]["mig_elapsed_s"] = 9.0
    after["generation"]["ddim"]["timing"] = {"samples_per_s": 99.0, "sample_seconds": 0.1}
    after["timings"]["train_vae"]["seconds"] = 1.0
    after["versions"]["git_commit"] = "b"
    after["config"]["diffusion"] = {"min_lr_ratio": 0.0}
    code, text = _run(tmp_path, after)
    assert code == 0 and "**identical**" in text and "`config.diffusion.min_lr_ratio`" in text


def test_a_changed_result_is_reported(tmp_path: Path) -> None:
    after = json.loads(json.dumps(BEFORE))
    after["levels"]["levels"][0]["mig"] = 0.1 + 1e-15
    del after["generation"]["ddim"]["fid"]
    code, text = _run(tmp_path, after)
    assert code == 1 and "**DIFFERENT**" in text
    assert "| `levels.levels[0].mig` | 0.1 |" in text and "- `generation.ddim.fid`" in text
