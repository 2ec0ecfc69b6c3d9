"""`vjepa demo` end to end on a tiny world: every step's run folder and one report gathering them."""
from conftest import REPO, TINY_MASKS

from vjepa.config import load_config
from app.demo import DemoConfig, main


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
