"""TrainConfig: defaults are the densedepth recipe, recipe < YAML < flags, every float finite and in range."""

from __future__ import annotations

import math

import pytest

from transferdepth.recipe import DEFAULT_PRESET, PRESETS
from transferdepth.training.config import ARCHITECTURE_KEYS, FIELDS, ConfigError, TrainConfig, load_config


def test_defaults_equal_the_densedepth_preset():
    cfg = TrainConfig()
    assert cfg.recipe == DEFAULT_PRESET == "densedepth"
    assert {k: getattr(cfg, k) for k in PRESETS["densedepth"]} == PRESETS["densedepth"]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_key_is_a_config_key_and_loads(name):
    assert set(PRESETS[name]) <= set(FIELDS)
    cfg = load_config(overrides={"recipe": name})
    assert cfg.recipe == name and {k: getattr(cfg, k) for k in PRESETS[name]} == PRESETS[name]


def test_recipe_then_yaml_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("recipe: densedepth-2018\nadam_eps: 1.0e-6\nbatch_size: 2\n")
    cfg = load_config(f, {"batch_size": "3"})
    assert cfg.decoder_width == 1.0 and cfg.decoder_act_a is False  # from the preset named in the file
    assert cfg.adam_eps == 1e-6 and cfg.batch_size == 3  # file over preset, flag over file
    cfg = load_config(f, {"recipe": "densedepth"})  # a flag's recipe wins; the file still overrides it
    assert cfg.decoder_width == 0.5 and cfg.adam_eps == 1e-6
    with pytest.raises(ConfigError, match="recipe must be one of densedepth, densedepth-2018"):
        load_config(overrides={"recipe": "keras"})


def test_architecture_keys():
    assert set(ARCHITECTURE_KEYS) == {"encoder", "decoder_width", "min_depth", "max_depth", "decoder_act_a",
                                      "bottleneck_relu", "input_norm", "decoder", "output_space"}


def test_optional_keys_take_none():
    cfg = load_config(overrides={"bottleneck_relu": "true", "bn_momentum": "none"})
    assert cfg.bottleneck_relu is True and cfg.bn_momentum is None
    assert load_config(overrides={"bottleneck_relu": "none"}).bottleneck_relu is None


FLOAT_KEYS = [n for n in FIELDS if isinstance(getattr(TrainConfig(), n), float)]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
@pytest.mark.parametrize("name", FLOAT_KEYS)
def test_every_float_key_must_be_finite(name, value):
    with pytest.raises(ConfigError, match=f"{name} must be a finite number"):
        load_config(overrides={name: value})


BAD = [({"lr": 0}, "lr must be > 0"), ({"beta1": 1.0}, "beta1 and beta2"), ({"adam_eps": 0}, "adam_eps"),
       ({"weight_decay": -1}, "weight_decay"), ({"w_depth": -0.1}, "w_depth"),
       ({"w_depth": 0, "w_grad": 0, "w_ssim": 0}, "not all 0"), ({"bn_momentum": 1.5}, "bn_momentum"),
       ({"min_depth": 5, "max_depth": 2}, "min_depth < max_depth"), ({"min_depth": 0}, "min_depth"),
       ({"height": 33}, "must be even"), ({"width": 30}, ">= 32"), ({"decoder_init": "he"}, "decoder_init"),
       ({"input_norm": "x"}, "input_norm"), ({"target_resize": "x"}, "target_resize"),
       ({"shuffle": "never"}, "shuffle"), ({"grad_term": "x"}, "grad_term"), ({"seed": -1}, "seed"),
       ({"flip_p": 1.5}, "flip_p"), ({"grad_clip": 0}, "grad_clip"), ({"decoder_width": 0}, "decoder_width"),
       ({"output_init": "mean"}, "output_init must be one of auto, reference, targets")]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[next(iter(o)) + "-" + str(i) for i, (o, _) in
                                                             enumerate(BAD)])
def test_out_of_range_values_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_defaults_are_finite():
    assert all(math.isfinite(getattr(TrainConfig(), n)) for n in FLOAT_KEYS)


def test_with_recipe_keeps_explicit_keys_and_resets_the_rest():
    """A study row `ENCODER@RECIPE`: the row's preset replaces the base recipe's values, but keys the user set
    stay; keys only the old recipe set go back to their defaults."""
    from transferdepth.training.config import with_recipe

    base = load_config(overrides={"lr": 3e-4, "encoder": "mobilenetv2"})
    ft = with_recipe(base, "finetune")
    assert ft.recipe == "finetune" and ft.lr == 3e-4 and ft.encoder == "mobilenetv2"
    for k, v in PRESETS["finetune"].items():
        if k != "lr":
            assert getattr(ft, k) == v, k
    back = with_recipe(ft, "densedepth")
    assert back.lr == 3e-4 and back.batchnorm == "train" and back.warmup_ratio == 0.0
    assert back.lr_schedule == "constant" and back.to_dict() == {**base.to_dict(), "recipe": "densedepth"}
    direct = with_recipe(TrainConfig(lr=2e-4), "finetune")  # built directly: what differs from its recipe is explicit
    assert direct.lr == 2e-4 and direct.batchnorm == "frozen"
    with pytest.raises(ConfigError, match="recipe must be one of"):
        with_recipe(base, "fast")
