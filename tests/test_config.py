"""Typed configs: typos, wrong types and names outside a closed set stop a run at start, naming the key and the file."""
import pytest

from app.cli import COMMANDS, load_command_config
from app.demo import DemoConfig
from evals.physics import PhysicsConfig
from evals.probe import ProbeConfig
from vjepa.config import ConfigError, load_config, resolve_config_path, shipped_configs
from vjepa.train import PretrainConfig


def test_shipped_pretrain_recipes_load():
    tiny = load_config(PretrainConfig, "configs/pretrain/tiny_world.yaml")
    assert tiny.model.patch_size == 8 and [m.type for m in tiny.masks] == ["multiblock", "multiblock", "future"]
    vitl = load_config(PretrainConfig, "configs/pretrain/vitl16_k400.yaml", ["data.train_list=/data/k400.txt"])
    assert vitl.model.name == "vit_large" and vitl.optimization.schedule_steps == 112500


def test_override_wins_over_recipe():
    cfg = load_config(PretrainConfig, "configs/pretrain/tiny_world.yaml", ["optimization.lr=0.5", "data.batch_size=3"])
    assert cfg.optimization.lr == 0.5 and cfg.data.batch_size == 3


def test_typo_in_yaml_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimization:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*optimization\.lrr"):
        load_config(PretrainConfig, bad)


def test_typo_in_override_names_key():
    with pytest.raises(ConfigError, match=r"optimization\.lrr"):
        load_config(PretrainConfig, "configs/pretrain/tiny_world.yaml", ["optimization.lrr=0.1"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        load_config(PretrainConfig, "configs/pretrain/tiny_world.yaml", ["data.batch_size=many"])


def test_typo_inside_a_mask_entry_names_key(tmp_path):
    bad = tmp_path / "masks.yaml"
    bad.write_text("data: {train_list: x.txt}\nmasks:\n  - {type: multiblock, num_blokcs: 4}\n")
    with pytest.raises(ConfigError, match=r"num_blokcs"):
        load_config(PretrainConfig, bad)


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError, match=r"data\.train_list"):
        load_config(PretrainConfig, "configs/pretrain/vitl16_k400.yaml")


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(PretrainConfig, None, ["optimization.lr"])


def test_a_list_item_holding_brackets_is_passed_whole_when_quoted():
    cfg = load_config(DemoConfig, None, ['pretrain=["optimization.ema=[0.99,1.0]",optimization.steps=3]'])
    assert list(cfg.pretrain) == ["optimization.ema=[0.99,1.0]", "optimization.steps=3"]


@pytest.mark.parametrize("override, message", [
    ("pretrain=[optimization.ema=[0.99,1.0]]", r"'pretrain=\[optimization.ema=\[0.99,1.0\]\]' is not valid YAML.*quotes"),
    ("pretrain=optimization.steps=3", r"key 'pretrain' takes a list"),
    ("pretrain={steps: 3}", r"does not fit key 'pretrain'"),
])
def test_an_override_that_cannot_be_read_is_named_in_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(DemoConfig, None, [override])
    assert "\n" not in str(info.value)


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(PretrainConfig, "configs/nope.yaml")


@pytest.mark.parametrize("schema, recipe, override, key, choices", [
    (PretrainConfig, "configs/pretrain/tiny_world.yaml", "objective=jepaa", "objective", "jepa, pixel, denoise"),
    (PretrainConfig, "configs/pretrain/tiny_world.yaml", "device=gpu", "device", "auto, cpu, cuda"),
    (PretrainConfig, "configs/pretrain/tiny_world.yaml", "model.name=vit_mini", "model.name", "vit_micro"),
    (PretrainConfig, "configs/pretrain/tiny_world.yaml", "masks=[{type: blocks}]", "masks[0].type", "multiblock, tube, future"),
    (PhysicsConfig, "configs/evals/physics_world.yaml", "score=median", "score", "max, mean"),
    (ProbeConfig, "configs/evals/probe_world.yaml", "models.jepa.kind=ckpt", "models.jepa.kind", "checkpoint, random, raw, timm, videomae"),
    (ProbeConfig, "configs/evals/probe_world.yaml", "tasks.n_objects.probes=[linear,svm]", "tasks.n_objects.probes", "knn"),
])
def test_a_name_outside_its_closed_set_is_rejected_at_load_naming_key_and_choices(schema, recipe, override, key, choices):
    with pytest.raises(ConfigError) as error:
        load_config(schema, recipe, ["data.train_list=x.txt"] * (schema is PretrainConfig) + [override])
    assert f"key '{key}'" in str(error.value) and choices in str(error.value) and recipe in str(error.value)


def test_every_command_loads_its_shipped_default_recipe_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here, so the shipped recipes must be found
    for name, command in COMMANDS.items():
        if command.default_config:
            assert resolve_config_path(command.default_config).is_relative_to(shipped_configs())
            load_command_config(name)
    assert resolve_config_path("pretrain/tiny_world.yaml") == shipped_configs() / "pretrain/tiny_world.yaml"
    (tmp_path / "mine.yaml").write_text("seed: 3\n")
    assert load_command_config("world", "mine.yaml").seed == 3  # the current folder first
