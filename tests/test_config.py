"""Recipes: defaults, overrides, and clear errors for unknown keys and bad values."""

from pathlib import Path

import pytest

from medseg.config import DEFAULT_RECIPE, build_config, load_config, parse_override, write_yaml_atomic
from medseg.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_default_recipe_is_the_synthetic_unet():
    cfg = load_config()
    assert cfg.model.name == "unet" and cfg.data.dataset == "synthetic_vessels"
    assert cfg.model.args == DEFAULT_RECIPE["model"]["args"]


def test_overrides_parse_yaml_values_and_nest():
    cfg = build_config(
        {}, ["optim.lr=3e-4", "optim.betas=[0.9, 0.95]", "model.args={base_channels: 8}", "train.devices=2"]
    )
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.optim.betas == (0.9, 0.95)
    assert cfg.model.args == {"base_channels": 8}
    assert cfg.train.devices == 2
    assert parse_override("data.root=../x") == ("data.root", "../x")


@pytest.mark.parametrize(
    "base, overrides, expected",
    [
        ({"optim": {"lrr": 1e-3}}, [], "did you mean optim.lr"),
        ({"trian": {}}, [], "did you mean train"),
        ({}, ["data.patch_sise=64"], "data.patch_size"),
        ({}, ["loss.name=bce_dic"], "did you mean 'bce_dice'"),
        ({}, ["schedule.name=cosin"], "did you mean 'cosine'"),
        ({}, ["train.max_epochs=ten"], "train.max_epochs must be an integer"),
        ({}, ["loss.fov_only=3"], "must be true or false"),
        ({}, ["data.val_fraction=0"], "data.val_fraction"),
        ({}, ["optim.lr"], "expected key=value"),
    ],
)
def test_bad_keys_and_values_name_the_key(base, overrides, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        build_config(base, overrides)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  nmae: dscnet\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown config key 'model.nmae'; did you mean model.name"):
        load_config(typo)


def test_round_trip_through_yaml(tmp_path):
    cfg = build_config({}, ["optim.lr=0.01", "model.name=dscnet"])
    write_yaml_atomic(cfg.to_dict(), tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg


def test_every_shipped_recipe_loads_and_names_known_parts():
    from medseg.data import list_datasets
    from medseg.models import list_models

    recipes = sorted((REPO / "configs").rglob("*.yaml"))
    assert recipes, "no recipes found under configs/"
    for path in recipes:
        cfg = load_config(path)
        assert cfg.model.name in list_models(), path
        assert cfg.data.dataset in list_datasets(), path


def test_free_form_sections_replace_whole_and_merge_by_key():
    base = {"model": {"name": "unet", "args": {"base_channels": 16, "depth": 3}}}
    cfg = build_config(base, ["model.args.depth=2"])
    assert cfg.model.args == {"base_channels": 16, "depth": 2}
    cfg = build_config(base, ["model.name=dscnet", "model.args={kernel_size: 5}"])
    assert cfg.model.args == {"kernel_size": 5}
