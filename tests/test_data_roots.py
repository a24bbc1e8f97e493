"""Root resolution: explicit root, $IJEPA_EVAL_DATA/<folder>, the data.yaml config; helpful failure."""

import pytest

from ijepa_eval.data import resolve_root
from ijepa_eval.errors import DatasetError


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    monkeypatch.delenv("IJEPA_EVAL_DATA", raising=False)
    monkeypatch.setenv("IJEPA_EVAL_CONFIG", str(tmp_path / "absent.yaml"))
    return tmp_path


def test_explicit_root(clean_env):
    assert resolve_root("cifar100", clean_env) == clean_env
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_root("cifar100", clean_env / "nope")


def test_env_conventional_folders(clean_env, monkeypatch):
    (clean_env / "imagenet").mkdir()
    (clean_env / "CLEVR_v1.0").mkdir()
    monkeypatch.setenv("IJEPA_EVAL_DATA", str(clean_env))
    assert resolve_root("imagenet_1pct") == clean_env / "imagenet"
    assert resolve_root("clevr_dist") == clean_env / "CLEVR_v1.0"


def test_config_file(clean_env, monkeypatch):
    cfg = clean_env / "data.yaml"
    (clean_env / "in1k").mkdir()
    (clean_env / "c100").mkdir()
    cfg.write_text(f"roots:\n  imagenet: {clean_env / 'in1k'}\n  cifar100: {clean_env / 'c100'}\n")
    monkeypatch.setenv("IJEPA_EVAL_CONFIG", str(cfg))
    assert resolve_root("imagenet_10pct") == clean_env / "in1k"
    assert resolve_root("cifar100") == clean_env / "c100"
    cfg.write_text(f"clevr_count: {clean_env / 'gone'}\n")
    with pytest.raises(DatasetError, match=r"gone \(from .*data.yaml key 'clevr_count'\)"):
        resolve_root("clevr_count")


def test_missing_root_lists_every_place(clean_env, monkeypatch):
    monkeypatch.setenv("IJEPA_EVAL_DATA", str(clean_env / "data"))
    with pytest.raises(DatasetError) as err:
        resolve_root("places205")
    msg = str(err.value)
    assert str(clean_env / "data" / "places205") in msg and str(clean_env / "data" / "Places205") in msg
    assert "absent.yaml (no such file)" in msg and "--root" in msg and "places205: DIR" in msg
    assert "\n" not in msg
