"""Typed configs: typos and wrong types stop a run at start, naming the key and the file."""
import pytest

from vjepa.config import ConfigError, load_config
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


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(PretrainConfig, "configs/nope.yaml")
