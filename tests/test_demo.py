"""`vjepa demo` end to end on a tiny world: every step's run folder and one report gathering them."""
from conftest import REPO, TINY_MASKS

import json

import pytest

from vjepa.config import load_config
from app.demo import STAGES, DemoConfig, eta_s, main
from app.results import README_END, README_START, main as results_main


def test_eta_scales_the_stages_left_by_the_pace_of_those_that_ran():
    reference = {name: seconds for name, _, seconds in STAGES}
    done = {"world": 2 * reference["world"]}  # this machine runs at half the reference speed
    assert eta_s(done, ["pretrain", "probe"]) == pytest.approx(2 * (reference["pretrain"] + reference["probe"]))


def test_eta_ignores_a_stage_that_was_reused_rather_than_run():
    reference = {name: seconds for name, _, seconds in STAGES}
    done = {"world": 0.1}  # the world was already on disk
    assert eta_s(done, ["pretrain"]) == pytest.approx(reference["pretrain"])


def test_demo_runs_every_step_and_gathers_them_in_one_report(tmp_path):
    cfg = load_config(DemoConfig, None, [
        f"output={tmp_path / 'demo'}",
        f"world_config={REPO / 'configs/world/default.yaml'}",
        "world=[num_train=24,num_val=8,frames=16,size=32,'object_size=[2.0,5.0]',workers=1]",
        "pretrain=[data.frames_per_clip=8,data.crop_size=32,data.batch_size=4,data.num_workers=0,"
        "model.depth=2,optimization.steps=4,optimization.warmup_steps=1,logging.progress=false,"
        f"'{TINY_MASKS}']",
        "probe=[features.frames_per_clip=8,features.crop_size=32,features.num_workers=0,features.layers=2,"
        "'models.random.seeds=[0]',attentive.epochs=2]",
        "dream=[data.max_videos=4,data.num_workers=0,'models.random.seeds=[0]',context_slots=2]",
        "voe=[groups_per_property=2]",
        "physics=['models.random.seeds=[0]','context_slots=[1,2]',bootstrap=50]",
    ])
    report = main(cfg)
    out = tmp_path / "demo"
    for step in ("world/train.txt", "pretrain/checkpoints/latest.pt", "probe/metrics.json", "dream/metrics.json",
                 "physics/metrics.json"):
        assert (out / step).is_file(), step
    text = report.read_text()
    for heading in ("## Pretraining", "## Frozen probes", "## Imagined rollouts", "## Violation of expectation"):
        assert heading in text
    assert "](probe/probe.png)" in text and "](physics/accuracy.png)" in text
    assert "## Headline" in text and "object count, attentive probe" in text
    assert set(json.loads((out / "timings.json").read_text())) == {name for name, _, _ in STAGES}

    # docs/results.md and the README's headline are regenerated from these run folders
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{README_START}\nold table\n{README_END}\n\nthe rest\n")
    results_main(["--demo", str(out), "--docs", str(tmp_path / "docs"), "--readme", str(readme)])
    results = (tmp_path / "docs" / "results.md").read_text()
    assert "object count, attentive probe" in results
    assert "\n## Frozen probes" not in results and "\n### Frozen probes" in results  # one level down
    assert "(img/probe_probe.png)" in results
    assert (tmp_path / "docs" / "img" / "probe_probe.png").is_file()
    new = readme.read_text()
    assert "old table" not in new and "object count, attentive probe" in new and new.endswith("the rest\n")


def test_results_names_the_missing_run_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        results_main(["--demo", str(tmp_path / "nowhere"), "--docs", str(tmp_path / "docs"), "--readme",
                      str(tmp_path / "README.md")])
    assert exit_info.value.code == 2
    assert "nowhere/probe/metrics.json: not found" in capsys.readouterr().err
