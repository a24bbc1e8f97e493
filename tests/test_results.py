import json

import pytest

from ijepa_eval.errors import IjepaEvalError
from ijepa_eval.results import ResultRecord, iter_result_paths, load_result, result_filename, write_result


def record(**model) -> ResultRecord:
    return ResultRecord(
        protocol={"name": "clevr_count", "version": 1, "config": {}},
        model={"source": "/ckpts/run.pth.tar", "sha256": "ab" * 32, "branch": "target", **model},
        features={}, dataset={}, metrics={"top1": 61.5}, selection={"split": "train_holdout", "head": "h0"},
    )


def test_round_trip_and_name(tmp_path):
    original = record()
    path = write_result(original, tmp_path)
    assert path.name == "run.pth.tar-abababababab__target__clevr_count.json"
    assert json.loads(path.read_text())["schema_version"] == 2
    assert load_result(path) == original
    assert result_filename(record(label="my run/1")) == "my_run_1-abababababab__target__clevr_count.json"


def test_folders_yield_only_result_files(tmp_path):
    """A results tree may hold a feature cache and a pretraining run (make demo does): skip their JSON."""
    path = write_result(record(), tmp_path / "runs")
    (tmp_path / "cache" / "key").mkdir(parents=True)
    (tmp_path / "cache" / "key" / "meta.json").write_text("{}")
    (tmp_path / "summary.json").write_text("{}")
    assert iter_result_paths([tmp_path]) == [path]
    with pytest.raises(IjepaEvalError, match="schema_version"):  # named explicitly: read, and refused
        load_result(tmp_path / "summary.json")
    with pytest.raises(IjepaEvalError, match="no such result file or folder"):
        iter_result_paths([tmp_path / "missing"])


def test_corrupt_json_is_a_one_line_error(tmp_path):
    bad = tmp_path / "x__target__knn.json"
    bad.write_text('{"schema_version": 1, "protocol"')
    with pytest.raises(IjepaEvalError, match="is not valid JSON") as err:
        load_result(bad)
    assert "\n" not in str(err.value)
