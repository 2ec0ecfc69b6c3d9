"""`vjepa compare` end to end on a tiny world: three objectives, the same probes and world-model tests."""
import json

import pytest

from conftest import REPO, TINY_MASKS
from evals.compare import CompareConfig, main
from vjepa.config import load_config

TINY = [
    "pretrain=[data.frames_per_clip=8,data.crop_size=32,data.batch_size=4,data.num_workers=0,model.depth=2,"
    "model.pred_depth=1,optimization.steps=3,optimization.warmup_steps=1,logging.progress=false,"
    f"'{TINY_MASKS}']",
    "probe=[features.frames_per_clip=8,features.crop_size=32,features.num_workers=0,features.layers=2,"
    "data.max_train_videos=0,attentive.epochs=2,'attentive.lrs=[0.001]']",
    "dream=[data.max_videos=4,data.num_workers=0,context_slots=2]",
    "physics=['context_slots=[1,2]',bootstrap=50]",
    "voe=[groups_per_property=2,world.frames=16,world.size=32,'world.object_size=[2.0,5.0]']",
    "random_seeds=[0]", "horizons=[1,2]",
]


def compare_config(world, output, *overrides: str) -> CompareConfig:
    return load_config(CompareConfig, REPO / "configs/evals/compare_world.yaml",
                       [f"world={world}", f"output={output}", *TINY, *overrides])


def test_compare_trains_every_objective_and_tables_them(tiny_world, tmp_path):
    metrics = main(compare_config(tiny_world, tmp_path, "seeds=[0,1]"))
    models = metrics["models"]
    assert list(models) == ["jepa", "pixel", "denoise", "random", "raw"]
    for name in ("jepa", "pixel", "denoise"):
        assert models[name]["seeds"] == 2 and models[name]["train_s"]["seeds"] == 2
        assert (tmp_path / "pretrain" / f"{name}_s1" / "checkpoints" / "latest.pt").is_file()
        assert "std" in models[name]["probe"]["latents/linear"]
    # world-model tests need a predictor of the future: jepa and pixel have one, denoising and raw pixels do not
    for name in ("jepa", "pixel", "random"):
        assert models[name]["rollout"]["horizon"] == [1, 2] and models[name]["voe"]["mean"]["value"] >= 0
    assert models["denoise"]["rollout"] == {} and models["raw"]["voe"] == {}
    report = (tmp_path / "report.md").read_text()
    assert "| jepa | 2 |" in report and "| denoise | 2 |" in report and "rollout h=2" in report
    assert (tmp_path / "compare.png").stat().st_size > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["models"].keys() == models.keys()


def test_compare_names_a_missing_checkpoint(tiny_world, tmp_path):
    with pytest.raises(FileNotFoundError, match="models.pixel.checkpoint"):
        main(compare_config(tiny_world, tmp_path, "models.pixel.checkpoint=/nonexistent/s{seed}.pt"))
