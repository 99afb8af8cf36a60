from pathlib import Path

import pytest

from rare.config import ConfigError, load_all, load_section, raw_params

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_repo_params_validate():
    sections = load_all(REPO_PARAMS)
    assert set(sections) == {"data", "enhance", "pretrain", "train", "evaluate", "report", "tracking"}
    assert sections["tracking"].tracking_uri.startswith("sqlite:///")
    # train fine-tunes what pretrain writes, on the text tower the vision tower was aligned with
    assert sections["train"].model.vision.pretrained == "models/pretrain"
    assert sections["train"].model.text == sections["pretrain"].model.text


def test_unknown_key_names_key_and_allowed(tmp_path):
    p = write(tmp_path, "enhance:\n  backend: standin\n  shard_sise: 10\n")
    with pytest.raises(ConfigError) as exc:
        load_section("enhance", p)
    msg = str(exc.value)
    assert "enhance.shard_sise: unknown key" in msg
    assert "shard_size" in msg  # the allowed keys are listed


def test_wrong_literal_lists_allowed_values(tmp_path):
    p = write(tmp_path, "enhance:\n  backend: gpt\n")
    with pytest.raises(ConfigError) as exc:
        load_section("enhance", p)
    assert "enhance.backend" in str(exc.value)
    assert "'standin'" in str(exc.value) and "'openai'" in str(exc.value)


def test_out_of_range_and_wrong_type(tmp_path):
    p = write(tmp_path, "enhance:\n  max_failure_rate: 1.5\n")
    with pytest.raises(ConfigError, match=r"enhance.max_failure_rate: Input should be less than or equal to 1"):
        load_section("enhance", p)
    p = write(tmp_path, "enhance:\n  shard_size: many\n")
    with pytest.raises(ConfigError, match=r"enhance.shard_size: Input should be a valid integer"):
        load_section("enhance", p)


def test_nested_unknown_key(tmp_path):
    p = write(tmp_path, "enhance:\n  noise:\n    drop_details: 0.1\n")
    with pytest.raises(ConfigError) as exc:
        load_section("enhance", p)
    assert "enhance.noise.drop_details: unknown key" in str(exc.value)
    assert "drop_detail" in str(exc.value)


def test_unknown_section_and_profile(tmp_path):
    with pytest.raises(ConfigError, match="unknown top-level key"):
        load_section("data", write(tmp_path, "trian: {}\n"))
    with pytest.raises(ConfigError, match="profile: 'real' is not defined"):
        load_section("data", write(tmp_path, "profile: real\n"))


def test_profile_overrides_apply_deeply(tmp_path):
    p = write(tmp_path, (
        "profile: big\n"
        "enhance:\n  backend: standin\n  noise: {drop_detail: 0.1, fail_entity: 0.2}\n"
        "profiles:\n  big:\n    enhance:\n      backend: openai\n      noise: {drop_detail: 0.5}\n"
    ))
    enh = load_section("enhance", p)
    assert enh.backend == "openai"
    assert enh.noise.drop_detail == 0.5 and enh.noise.fail_entity == 0.2
    assert raw_params(p)["profile"] == "big"


def test_mbeir_source_requires_root(tmp_path):
    with pytest.raises(ConfigError, match="mbeir_root must be set"):
        load_section("data", write(tmp_path, "data:\n  source: mbeir\n"))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_section("data", tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_section("data", write(tmp_path, "data: [\n"))


def test_empty_duplicate_and_non_mapping_files_name_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"params.yaml:1: params file is empty"):
        load_section("train", write(tmp_path, "# only a comment\n"))
    with pytest.raises(ConfigError, match=r"params.yaml:3: invalid YAML \(duplicate key 'train' \(first on line 1\)\)"):
        load_section("train", write(tmp_path, "train:\n  seed: 1\ntrain:\n  seed: 2\n"))
    nested = "enhance:\n  noise:\n    drop_detail: 0.1\n    drop_detail: 0.2\n"
    with pytest.raises(ConfigError, match=r"params.yaml:4: invalid YAML \(duplicate key 'drop_detail'"):
        load_section("enhance", write(tmp_path, nested))
    with pytest.raises(ConfigError, match=r"params.yaml:1: expected a mapping of sections at the top level, got list"):
        load_section("train", write(tmp_path, "- train\n- data\n"))
    with pytest.raises(ConfigError, match=r"params.yaml:2: train: expected a mapping, got int"):
        load_section("train", write(tmp_path, "data: {}\ntrain: 5\n"))
    with pytest.raises(ConfigError, match=r"params.yaml:1: not valid UTF-8"):
        p = tmp_path / "params.yaml"
        p.write_bytes(b"train:\xff\n")
        load_section("train", p)


def test_profile_errors_name_the_full_path_and_line(tmp_path):
    p = write(tmp_path, "profile: mbeir\ntrain:\n  seed: 1\nprofiles:\n  mbeir:\n    train:\n      batchsize: 3\n")
    with pytest.raises(ConfigError, match=r"params.yaml:7: profiles.mbeir.train.batchsize: unknown key"):
        load_section("train", p)
    p = write(tmp_path, "profile: mbeir\ntrain:\n  seed: 1\nprofiles:\n  mbeir:\n    train:\n      seed: x\n")
    with pytest.raises(ConfigError, match=r"params.yaml:7: profiles.mbeir.train.seed: Input should be a valid integer"):
        load_section("train", p)
    with pytest.raises(ConfigError, match=r"params.yaml:3: train.seed: Input should be a valid integer"):
        load_section("train", write(tmp_path, "profile: mbeir\ntrain:\n  seed: x\nprofiles:\n  mbeir: {}\n"))


def test_a_yaml_bool_is_not_a_number(tmp_path):
    with pytest.raises(ConfigError, match=r"params.yaml:2: train.batch_size: expected a number, got true"):
        load_section("train", write(tmp_path, "train:\n  batch_size: true\n"))
    with pytest.raises(ConfigError, match=r"params.yaml:2: enhance.max_failure_rate: expected a number, got false"):
        load_section("enhance", write(tmp_path, "enhance:\n  max_failure_rate: false\n"))


def test_the_family_choices_are_the_family_registry() -> None:
    from typing import get_args

    from rare.config.train import ModelParams
    from rare.model.families import FAMILIES

    assert get_args(ModelParams.model_fields["family"].annotation) == tuple(FAMILIES)
