from pathlib import Path

import pytest

from spinebench.config import config_hash, load_yaml_file, parse_overrides, resolve
from spinebench.errors import ConfigError


def _resolve(**kw):
    args = dict(method="supervised", method_options={"alpha": 0.5}, method_defaults={})
    args.update(kw)
    return resolve(**args)


def test_layers_apply_in_order_and_types_are_kept():
    cfg = _resolve(
        method_defaults={"train": {"lr": 0.02}},
        file_config={"train": {"lr": 0.03, "iterations": 10}},
        overrides={"train.lr": 1},
    )
    assert cfg["train"]["lr"] == 1.0 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["iterations"] == 10
    assert cfg["method"]["alpha"] == 0.5
    assert cfg["run"]["profile"] == "quick"


def test_paper_profile_changes_scale():
    assert _resolve(profile="paper")["data"]["image_size"] == 512


def test_unknown_key_names_the_closest_valid_one():
    message = r"unknown config key 'train.iteration'.*'train.iterations'"
    with pytest.raises(ConfigError, match=message):
        _resolve(overrides={"train.iteration": 5})


def test_unknown_section_lists_the_sections_and_a_known_one_all_its_keys():
    with pytest.raises(ConfigError, match="valid sections: augment, data, eval, method, model"):
        _resolve(overrides={"zzz.qqq": 5})
    with pytest.raises(ConfigError) as info:
        _resolve(overrides={"augment.qxqxqxqxqx": 5})
    listed = str(info.value).split("valid augment keys: ")[1].split(", ")
    assert len(listed) == 7 and "augment.blur_sigma" in listed  # every key, none cut off


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match="train.iterations.*expects int"):
        _resolve(overrides={"train.iterations": "many"})


def test_method_alias_maps_to_method_namespace():
    assert parse_overrides(["cps4.token_loss=false", "train.lr=0.1"], "cps4") == {
        "method.token_loss": False,
        "train.lr": 0.1,
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.lr"], "cps4")


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile"):
        _resolve(profile="huge")


def test_yaml_syntax_error_names_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 0.1\n  iterations: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: YAML syntax error at line \d+"):
        load_yaml_file(bad)


def test_hash_is_stable_and_sensitive():
    a, b = _resolve(), _resolve()
    assert config_hash(a) == config_hash(b)
    c = _resolve(overrides={"train.lr": 0.5})
    assert config_hash(a) != config_hash(c)
