import re
import warnings
from pathlib import Path

import pytest

from spinebench.config import config_hash, load_yaml_file, parse_overrides, resolve
from spinebench.errors import ConfigError
from spinebench.strict_yaml import MAX_YAML_VALUES


def _resolve(**kw):
    args = dict(method="supervised", method_options={"alpha": 0.5}, method_defaults={})
    args.update(kw)
    return resolve(**args)


def test_layers_apply_in_order_and_types_are_kept():
    with pytest.warns(UserWarning, match="the command line wins"):
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


# -- config parsing that cannot surprise (issue 27) -------------------------------------------


def _load(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_yaml_file(path)


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"line 3.*key 'lr' is given twice.*lines 2 and 3"):
        _load(tmp_path, "train:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match="key 'a' is given twice"):
        parse_overrides(["cps4.small={a: 1, a: 2}"], "cps4")


def test_merge_keys_and_plain_aliases_still_load(tmp_path: Path):
    text = "base: &b {lr: 0.1, iterations: 5}\ntrain:\n  <<: *b\n  lr: 0.2\n"
    assert _load(tmp_path, text)["train"] == {"lr": 0.2, "iterations": 5}


def test_an_alias_bomb_is_refused_quickly_in_one_short_line(tmp_path: Path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):  # 9**9 values once expanded
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    lines.append("train:\n  iterations: *i")
    with pytest.raises(ConfigError) as info:  # measured on the node graph, never expanded
        _load(tmp_path, "\n".join(lines))
    assert f"expand to more than {MAX_YAML_VALUES} values" in str(info.value)
    assert len(str(info.value)) < 300


def test_an_alias_inside_its_own_anchor_and_deep_nesting_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="an alias refers to the value that contains it"):
        _load(tmp_path, "train: &t [*t]\n")
    with pytest.raises(ConfigError, match="YAML nested too deeply"):
        _load(tmp_path, "train: " + "[" * 3000 + "]" * 3000 + "\n")


def test_an_unhashable_key_is_not_called_a_tag(tmp_path: Path):
    with pytest.raises(ConfigError, match="found unhashable key") as info:
        _load(tmp_path, "[a, b]: 1\n")
    assert "tag" not in str(info.value)


def test_error_lines_quote_at_most_a_short_excerpt():
    for value in ["x" * 100_000, list(range(100_000)), {f"k{i}": i for i in range(10_000)}]:
        with pytest.raises(ConfigError) as info:
            _resolve(overrides={"train.lr": value})
        assert len(str(info.value)) < 250 and "..." in str(info.value)
    with pytest.raises(ConfigError) as info:
        _resolve(overrides={"train." + "q" * 100_000: 1})
    assert len(str(info.value)) < 600


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("1e-3", "YAML 1.1 reads 1e-3 as text (a float needs a dot and a signed exponent): "
                 "write 1.0e-3"),
        ("2.5E4", "write 2.5e+4"),
        ("-3e-05", "write -3.0e-05"),
    ],
)  # fmt: skip
def test_scientific_notation_yaml_reads_as_text_is_explained(text: str, hint: str):
    with pytest.raises(ConfigError, match=re.escape(hint)):
        _resolve(overrides=parse_overrides([f"train.lr={text}"], "supervised"))
    assert isinstance(parse_overrides([f"train.lr={hint.split()[-1]}"], "x")["train.lr"], float)


def test_scientific_notation_for_an_integer_key_says_the_integer():
    with pytest.raises(ConfigError, match="it is read as text: write 1000"):
        _resolve(overrides=parse_overrides(["train.iterations=1e3"], "supervised"))


@pytest.mark.parametrize("origin", ["file", "set"])
def test_a_section_given_a_value_is_named_a_section(tmp_path: Path, origin: str):
    kw = {"file_config": {"train": 5}} if origin == "file" else {"overrides": {"train": 3}}
    with pytest.raises(ConfigError) as info:
        _resolve(**kw)
    message = str(info.value)
    assert "'train' (from " in message and "is a section, not a key" in message
    assert "unknown config key" not in message and "train.iterations" in message


@pytest.mark.parametrize(
    ("layer", "key", "value", "flag"),
    [
        ("file_config", "seed", 3, "--seed"),
        ("overrides", "seed", 3, "--seed"),
        ("file_config", "labeled", 0.2, "--labeled"),
        ("file_config", "dataset", "spider", "--dataset"),
        ("file_config", "method", "cps4", "--method"),
        ("overrides", "profile", "paper", "--profile"),
    ],
)
def test_a_run_key_that_contradicts_its_flag_is_an_error(
    layer: str, key: str, value: object, flag: str
):
    given = {"file_config": {"run": {key: value}}} if layer == "file_config" else {
        "overrides": {f"run.{key}": value}
    }  # fmt: skip
    run = {"dataset": "synthetic", "labeled": 0.5, "seed": 0}
    with pytest.raises(ConfigError, match=f"config key 'run.{key}' is .*, but {flag} is"):
        _resolve(run=run, **given)


def test_run_keys_equal_to_the_flags_are_accepted_as_reproduce_writes_them():
    run = {"dataset": "synthetic", "labeled": 0.5, "seed": 3}
    file = {"run": {**run, "method": "supervised", "profile": "quick"}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _resolve(run=run, file_config=file)["run"]["seed"] == 3


def test_a_key_in_the_file_and_on_the_command_line_warns_which_wins(tmp_path: Path):
    file = {"train": {"deterministic": False, "lr": 0.1}, "data": {"dir": str(tmp_path)}}
    same = {"train.lr": 0.1, "data.dir": str(tmp_path / "." / "")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _resolve(file_config=file, overrides=same)  # equal values: nothing to say
    with pytest.warns(UserWarning) as caught:
        cfg = _resolve(file_config=file, overrides={"train.deterministic": True})
    assert cfg["train"]["deterministic"] is True
    assert [str(w.message) for w in caught] == [
        "config key 'train.deterministic' is False in the --config file and True on the "
        "command line (--deterministic/--no-deterministic or --set); the command line wins"
    ]
