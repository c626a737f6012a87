"""benchmarks/ablation.py without training: its configurations, its recipe and the report built from a results file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resshift.training.config import config_differences

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ablation.py"


def load_script():
    """The script as a module (registered first: its dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    module = sys.modules["ablation"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(name: str, T: int, p: float, kappa: float, psnr: float) -> dict:
    return {"name": name, "T": T, "p": p, "kappa": kappa, "train_steps": 6000, "limit": None,
            "val_sr": {"images": 32, "psnr": psnr, "ssim": 0.61, "stlpips": 0.42, "niqe": 6.5},
            "realset65": {"images": 65, "niqe": 5.9, "seconds_per_image": 9.0, "cpu_seconds_per_image": 4.5}}


def test_configurations_share_everything_but_the_chain():
    ablation = load_script()
    names = [chain.name for chain in ablation.all_chains(full=False)]
    assert names == ["T4-p0.3-k2", "T10-p0.3-k2", "T15-p0.3-k2", "T30-p0.3-k2", "T15-p1-k2", "T15-p3-k2",
                     "T15-p0.3-k0.5", "T15-p0.3-k8"]                        # the shared base point once
    full = ablation.all_chains(full=True)
    assert len(full) == 14 and {(c.T, c.p, c.kappa) for c in full} >= set(ablation.PAPER_TABLE1)
    base, other = (ablation.train_config(chain, 100).to_dict() for chain in ablation.all_chains(False)[2:4])
    assert config_differences(base, other) == ["model.config.schedule.num_steps"]
    schedule = base["model"]["config"]["schedule"]
    assert (schedule["min_noise_level"], schedule["sqrt_eta_end"]) == (0.04, 0.99)
    assert base["optim"]["perceptual_weight"] == 0


def test_report_from_a_results_file(tmp_path):
    ablation = load_script()
    results = tmp_path / "ablation.json"
    ablation.save_record(results, record("T4-p0.3-k2", 4, 0.3, 2.0, 20.0))
    ablation.save_record(results, record("T15-p0.3-k2", 15, 0.3, 2.0, 22.5))
    ablation.save_record(results, record("T4-p0.3-k2", 4, 0.3, 2.0, 21.25))     # replaces the first
    assert [r["val_sr"]["psnr"] for r in json.loads(results.read_text())["records"]] == [22.5, 21.25]

    markdown = ablation.report(results, tmp_path / "images", full=False)
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 10                                   # header, 4 T rows, 3 p rows, 3 kappa rows
    assert ("| T | 4 | 0.3 | 2 | – | – | – | – | – | 21.25 | 0.6100 | 0.4200 | – | 6.500 | 5.900 | 4.5 |"
            in rows)
    base_rows = [row for row in rows if row.startswith(("| T | 15 | 0.3 | 2 |", "| p | 15 | 0.3 | 2 |",
                                                        "| κ | 15 | 0.3 | 2 |"))]
    assert len(base_rows) == 3
    assert all("| 25.01 | 0.6769 | 0.2312 | 0.5922 | 53.66 | 22.50 |" in row for row in base_rows)
    assert "| κ | 15 | 0.3 | 8 | 25.31 | 0.6858 | 0.2592 | 0.5231 | 49.32 | – |" in markdown
    blue = {}
    for sweep in ("T", "p", "kappa"):
        pixels = np.asarray(Image.open(tmp_path / "images" / f"ablation-{sweep}.png").convert("RGB")).astype(int)
        blue[sweep] = int((np.abs(pixels - [0x1F, 0x77, 0xB4]).sum(axis=2) < 30).sum())
        assert f"images/ablation-{sweep}.png" in markdown
    assert blue["T"] > 3 * blue["p"] and blue["p"] == blue["kappa"] > 0     # T: two points joined; p, kappa: the base


def test_detail_ratio_is_the_square_of_the_contrast(tmp_path):
    """Luma and the Gaussian blur are affine, so an output with a times the reference's contrast around grey
    has a^2 of its fine-detail energy; 8-bit PNGs round that only in the third digit."""
    ablation = load_script()
    reference = np.random.default_rng(0).uniform(0.2, 0.8, size=(48, 64, 3))
    for folder, contrast in (("gt", 1.0), ("same", 1.0), ("soft", 0.5), ("sharp", 1.5)):
        (tmp_path / folder).mkdir()
        pixels = 0.5 + contrast * (reference - 0.5)
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(tmp_path / folder / "a.png")
    assert ablation.detail_ratio(tmp_path / "same", tmp_path / "gt") == 1.0
    assert abs(ablation.detail_ratio(tmp_path / "soft", tmp_path / "gt") - 0.25) < 3e-3
    assert abs(ablation.detail_ratio(tmp_path / "sharp", tmp_path / "gt") - 2.25) < 1e-2
    (tmp_path / "gt" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="no reference"):
        ablation.detail_ratio(tmp_path / "soft", tmp_path / "gt")


def test_distill_compare_rows_are_the_teacher_its_truncations_and_each_student(tiny_model_dir):
    load_script()                                     # distill_compare imports it by name
    spec = importlib.util.spec_from_file_location("distill_compare", SCRIPT.with_name("distill_compare.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    students = [module.named_folder("plain=runs/a"), module.named_folder("runs/b")]
    assert students == [("plain", Path("runs/a")), ("student", Path("runs/b"))]
    rows = module.rows_to_score(tiny_model_dir, students)      # the tiny model samples 4 steps
    assert rows == [("teacher, 4 steps", tiny_model_dir, None), ("teacher truncated to 1", tiny_model_dir, 1),
                    ("plain", Path("runs/a"), None), ("student", Path("runs/b"), None)]
    record = {"name": "student", "denoiser_calls": 1, "val_sr": {"psnr": 23.456, "ssim": 0.61234, "stlpips": 0.41234,
              "detail": 0.2345, "niqe": 6.1234}, "realset65": {"niqe": 5.4321, "cpu_seconds_per_image": 0.123}}
    assert module.markdown([record]).splitlines()[-1] == ("| student | 1 | 23.46 | 0.6123 | 0.4123 | 0.234 | 6.123 | "
                                                          "5.432 | 0.12 |")
