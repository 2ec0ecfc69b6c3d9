"""Pretraining end to end on the real (tiny) world: run folder, exact resume, failure modes."""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_PRETRAIN, tiny_pretrain_config
from vjepa.checkpoint import CheckpointError, load_checkpoint
from vjepa.data import DataError, train_dataset
from vjepa.distributed import DistInfo
from vjepa.models.config import build_networks
from vjepa.train import LOADER_WORKER_DIED, BatchStream, PretrainConfig, TrainingDiverged, pretrain
from vjepa.config import ConfigError, load_config


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_pretraining_writes_config_log_plot_and_official_checkpoint_keys(tiny_world, tmp_path):
    cfg = tiny_pretrain_config(tiny_world, tmp_path / "run")
    pretrain(cfg)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "curves.png").is_file()
    rows = read_rows(run / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(6))
    assert all(float(r["loss"]) > 0 and float(r["clips_per_s"]) > 0 for r in rows)
    assert float(rows[0]["rankme"]) > 1 and rows[1]["rankme"] == ""  # every rankme_every steps
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert {"encoder", "predictor", "target_encoder", "opt", "epoch", "step", "config"} <= set(ckpt)
    assert ckpt["step"] == 6 and ckpt["config"]["model"]["name"] == "vit_micro"
    assert "pos_embed" in ckpt["encoder"] and "mask_tokens.2" in ckpt["predictor"]  # three mask configs


def test_resumed_run_continues_with_exactly_the_uninterrupted_losses(tiny_world, tmp_path):
    # schedules span 8 steps in both runs; the interrupted one stops at 4, then resumes to 8
    common = ["optimization.schedule_steps=8", "logging.checkpoint_every=2", "data.num_workers=1"]
    pretrain(tiny_pretrain_config(tiny_world, tmp_path / "full", *common, "optimization.steps=8"))
    pretrain(tiny_pretrain_config(tiny_world, tmp_path / "split", *common, "optimization.steps=4"))
    pretrain(tiny_pretrain_config(tiny_world, tmp_path / "split", *common, "optimization.steps=8", "resume=true"))

    full = read_rows(tmp_path / "full" / "log.csv")
    split = read_rows(tmp_path / "split" / "log.csv")
    assert [r["step"] for r in split] == [str(s) for s in range(8)]  # no duplicated rows after resume
    assert [r["loss"] for r in split] == [r["loss"] for r in full]
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "latest.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")
    for key in ("encoder", "predictor", "target_encoder"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"


def damage(path) -> None:
    """Flip one byte in the middle of a file, as a bad disk or a torn copy would."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_resume_passes_over_damaged_checkpoints_to_the_newest_that_loads_and_ends_exactly(tiny_world, tmp_path, caplog,
                                                                                          fault):
    common = ["optimization.schedule_steps=8", "logging.checkpoint_every=2", "logging.snapshot_every=2"]
    pretrain(tiny_pretrain_config(tiny_world, tmp_path / "full", *common, "optimization.steps=8"))
    split = tmp_path / "split"
    pretrain(tiny_pretrain_config(tiny_world, split, *common, "optimization.steps=6"))
    ckpts = split / "checkpoints"
    (ckpts / "latest.pt").write_bytes((ckpts / "latest.pt").read_bytes()[:5000])  # a node died mid-copy
    damage(ckpts / "step_0000006.pt")
    pretrain(tiny_pretrain_config(tiny_world, split, *common, "optimization.steps=8", "resume=true"))

    passed_over = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resume: ")]
    assert len(passed_over) == 2 and "cannot read checkpoint" in passed_over[0] and "latest.pt" in passed_over[0]
    assert f"{ckpts / 'step_0000006.pt'} is damaged" in passed_over[1]
    assert any(f"resumed from {ckpts / 'step_0000004.pt'} at step 4" in r.getMessage() for r in caplog.records)
    full, rows = read_rows(tmp_path / "full" / "log.csv"), read_rows(split / "log.csv")
    assert [r["step"] for r in rows] == [str(s) for s in range(8)] and [r["loss"] for r in rows] == [r["loss"] for r in full]
    a, b = load_checkpoint(tmp_path / "full" / "checkpoints" / "latest.pt"), load_checkpoint(ckpts / "latest.pt")
    assert all(torch.equal(t, b["encoder"][k]) for k, t in a["encoder"].items())
    fault.record("resume=true with latest.pt truncated and the newest snapshot's bytes flipped",
                 "\n".join(f"WARNING {m}" for m in passed_over),
                 "resumes from the newest snapshot that loads (step 4); losses and weights equal an uninterrupted run")


def test_resume_with_every_checkpoint_damaged_stops_naming_each_and_overwrites_none(tiny_world, tmp_path, fault):
    run = tmp_path / "run"
    pretrain(tiny_pretrain_config(tiny_world, run, "optimization.steps=2", "logging.snapshot_every=2"))
    for name in ("latest.pt", "step_0000002.pt"):
        damage(run / "checkpoints" / name)
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* could be read: .*latest.pt.*step_0000002.pt") as err:
        pretrain(tiny_pretrain_config(tiny_world, run, "optimization.steps=4", "resume=true"))
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before
    fault.record("resume=true with every checkpoint damaged", f"vjepa pretrain: error: {err.value}",
                 "every checkpoint file byte for byte; nothing started over")


def test_a_checkpoint_that_cannot_be_written_stops_the_run_in_one_line_keeping_the_last_one(tiny_world, tmp_path, fault):
    run = tmp_path / "run"
    pretrain(tiny_pretrain_config(tiny_world, run, "optimization.steps=2", "logging.checkpoint_every=2"))
    size = (run / "checkpoints" / "latest.pt").stat().st_size
    # a real write limit on the resumed run: the log and the config fit, the next checkpoint does not
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({size // 2}, resource.RLIM_INFINITY))"
    args = ["pretrain", f"data.train_list={tiny_world / 'train.txt'}", f"output={run}", "resume=true",
            "optimization.steps=4", "logging.checkpoint_every=2", *TINY_PRETRAIN]
    result = subprocess.run([sys.executable, "-c", f"{limit}; import sys; from app.cli import main; sys.exit(main({args!r}))"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"vjepa pretrain: error: cannot write checkpoint {run / 'checkpoints' / 'latest.pt'}: File too large; "
        "latest.pt is as it was before")
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 2
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["latest.pt"]  # no temporary file left behind
    fault.record("a checkpoint write fails for lack of space (a real RLIMIT_FSIZE on the run)",
                 result.stderr.strip().splitlines()[-1], "the previous latest.pt (step 2), loadable; no temporary file")


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def test_a_killed_loader_worker_stops_the_run_in_one_line_and_the_run_resumes(tiny_world, tmp_path, fault):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "app", "pretrain", f"data.train_list={tiny_world / 'train.txt'}", f"output={run}",
            *TINY_PRETRAIN, "data.num_workers=1", "logging.checkpoint_every=2"]
    proc = subprocess.Popen([*args, "optimization.steps=100000"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ((run / "checkpoints" / "latest.pt").is_file() and children(proc.pid)):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    for worker in children(proc.pid):
        os.kill(worker, signal.SIGKILL)  # what the kernel's out-of-memory killer sends
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    # torch says one or the other, depending on whether its SIGCHLD handler or the batch's wait notices first
    assert re.match(r"vjepa pretrain: error: a data-loader worker died during step \d+ \(DataLoader worker \(pid(\(s\))? "
                    r"\d+\) (is killed by signal: Killed\.|exited unexpectedly)\)", last), last
    kept = int(re.search(r"latest.pt \(step (\d+)\) is kept: rerun with resume=true", last).group(1))
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == kept

    resumed = subprocess.run([*args, f"optimization.steps={kept + 4}", "resume=true"], cwd=REPO, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0 and f"at step {kept}" in resumed.stderr, resumed.stderr[-3000:]
    assert [int(r["step"]) for r in read_rows(run / "log.csv")] == list(range(kept + 4))
    fault.record("a data-loader worker killed with SIGKILL mid-run (as the OOM killer does)", last,
                 "the last latest.pt; resume=true goes on from it with one log row per step")


def test_a_worker_killed_while_handing_over_a_batch_is_named_not_reported_as_a_reset_connection(tiny_world, tmp_path):
    # killed mid-handover, the worker breaks the main process's shared-memory connection before torch sees it die
    cfg = tiny_pretrain_config(tiny_world, tmp_path, "data.num_workers=2")
    stream = BatchStream(train_dataset(cfg.data, cfg.seed), cfg, DistInfo())
    stream.get(0)
    reset = ConnectionResetError(104, "Connection reset by peer")
    assert stream._worker_death(reset, wait_s=0.2) is None  # every worker alive: the error is the connection's
    victim = stream._iter._workers[1]
    os.kill(victim.pid, signal.SIGKILL)
    death = stream._worker_death(reset)
    assert str(death).strip() == f"DataLoader worker (pid {victim.pid}) is killed by signal: Killed."
    assert death.__cause__ is reset
    assert LOADER_WORKER_DIED.search(str(death))  # so pretrain reports it as the one-line worker death


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_world, tmp_path, fault):
    run = tmp_path / "run"
    pretrain(tiny_pretrain_config(tiny_world, run, "optimization.steps=2"))
    good = load_checkpoint(run / "checkpoints" / "latest.pt")
    blow_up = ["resume=true", "optimization.steps=6", "optimization.warmup_steps=0", "optimization.lr=1e30",
               "optimization.final_lr=1e30", "optimization.clip_grad=0", "logging.checkpoint_every=1"]
    with pytest.raises(TrainingDiverged, match="latest.pt") as err:
        pretrain(tiny_pretrain_config(tiny_world, run, *blow_up))
    kept = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert kept["step"] == 2
    assert all(torch.equal(v, kept["encoder"][k]) for k, v in good["encoder"].items())
    fault.record("a diverging learning rate (1e30) with a checkpoint every step", f"vjepa pretrain: error: {err.value}",
                 "the last good latest.pt (step 2), unchanged")


def test_unreadable_videos_are_skipped_and_counted_in_the_log(tiny_world, tmp_path, caplog, fault):
    lines = (tiny_world / "train.txt").read_text().splitlines()[:10]
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00not a video" * 100)
    truncated = (tiny_world / lines[0].split()[0]).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(truncated[: len(truncated) // 3])
    entries = [f"{tiny_world / line.split()[0]} {line.split()[1]}" for line in lines]
    entries += [f"{tmp_path / 'corrupt.mp4'} 1", f"{tmp_path / 'missing.mp4'} 1", f"{tmp_path / 'truncated.mp4'} 1"]
    (tmp_path / "list.txt").write_text("\n".join(entries) + "\n")
    # 13 entries, batch 4: 3 batches an epoch; 6 steps = 2 epochs, so every entry is visited
    cfg = tiny_pretrain_config(tiny_world, tmp_path / "run", f"data.train_list={tmp_path / 'list.txt'}")
    summary = pretrain(cfg)
    rows = read_rows(tmp_path / "run" / "log.csv")
    assert summary["skipped_videos"] == 3 and rows[-1]["skipped_videos"] == "3"
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping ")]
    assert len(warned) == 3  # once each, though every entry is read twice
    fault.record("a list mixing good videos with a non-video, a missing and a truncated file",
                 "\n".join(f"WARNING {m}" for m in warned), "training on the good ones; skipped_videos = 3 in log.csv")


def test_a_list_without_a_readable_video_fails_naming_the_list(tmp_path, fault):
    (tmp_path / "bad.mp4").write_bytes(b"garbage")
    (tmp_path / "all_bad.txt").write_text(f"{tmp_path / 'bad.mp4'} 0\n{tmp_path / 'gone.mp4'} 1\n")
    cfg = tiny_pretrain_config(tmp_path, tmp_path / "run", f"data.train_list={tmp_path / 'all_bad.txt'}")
    with pytest.raises(DataError, match="all_bad.txt") as err:
        pretrain(cfg)
    fault.record("a list with no readable video", f"vjepa pretrain: error: {err.value}", "nothing written")


def test_cli_reports_a_config_typo_in_one_line(tmp_path, fault):
    result = subprocess.run(
        [sys.executable, "-m", "app", "pretrain", f"output={tmp_path}", "optimization.lrr=0.1"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 2
    assert "optimization.lrr" in result.stderr and "Traceback" not in result.stderr
    fault.record("a typo in a config key", result.stderr.strip().splitlines()[-1], "nothing written")


def test_vitl16_recipe_builds_a_304m_parameter_encoder():
    cfg = load_config(PretrainConfig, REPO / "configs/pretrain/vitl16_k400.yaml", ["data.train_list=k400.txt"])
    encoder, predictor = build_networks(cfg.model, cfg.data.frames_per_clip, cfg.data.crop_size, len(cfg.masks))
    n = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    assert 303e6 < n < 305e6, n
    assert predictor.predictor_embed.out_features == 384 and len(predictor.predictor_blocks) == 12


def test_pretraining_lowers_the_loss_without_collapse(tiny_world, tmp_path):
    cfg = tiny_pretrain_config(
        tiny_world, tmp_path / "run", "optimization.steps=120", "optimization.warmup_steps=10",
        "optimization.lr=3e-4", "optimization.ema=[0.99,1.0]", "logging.rankme_every=10", "data.batch_size=6",
    )
    pretrain(cfg)
    rows = read_rows(tmp_path / "run" / "log.csv")
    loss = [float(r["loss"]) for r in rows]
    first, last = sum(loss[:20]) / 20, sum(loss[-20:]) / 20
    assert last < 0.6 * first, (first, last)
    # collapse would drive the spread and the effective rank of the target features towards 0/1
    std = [float(r["target_std"]) for r in rows]
    ranks = [float(r["rankme"]) for r in rows if r["rankme"]]
    assert std[-1] > 0.5 * std[0], (std[0], std[-1])
    assert ranks[-1] > 0.5 * ranks[0], (ranks[0], ranks[-1])


def test_rope_run_saves_no_position_table_and_its_checkpoint_reloads_strictly(tiny_world, tmp_path):
    cfg = tiny_pretrain_config(tiny_world, tmp_path / "run", "model.pos_embed=rope", "optimization.steps=3")
    pretrain(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ckpt["config"]["model"]["pos_embed"] == "rope"
    assert "pos_embed" not in ckpt["target_encoder"] and "predictor_pos_embed" not in ckpt["predictor"]
    encoder, _ = build_networks(cfg.model, cfg.data.frames_per_clip, cfg.data.crop_size, len(cfg.masks))
    encoder.load_state_dict(ckpt["target_encoder"])  # strict: the same tensors, no table missing or left over
    with pytest.raises(ConfigError, match="'model.pos_embed': 'learn' is not one of sincos, rope"):
        tiny_pretrain_config(tiny_world, tmp_path / "bad", "model.pos_embed=learn")
