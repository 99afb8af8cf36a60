"""Expected failures become one line, wherever they are raised: in DataLoader workers, inside Prefect runs."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rare import failures
from rare.data.images import ImageLoadError
from rare.data.input_error import DataError


class _Failing(torch.utils.data.Dataset):
    def __init__(self, exc: Exception):
        self.exc = exc

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> int:
        raise self.exc


@pytest.mark.parametrize("exc", [ImageLoadError("/data/img/q7.png: image file not found"),
                                 DataError("/data/q.jsonl", 3, "malformed JSON")])
def test_dataloader_worker_errors_are_unwrapped_to_their_cause(exc: Exception) -> None:
    loader = torch.utils.data.DataLoader(_Failing(exc), num_workers=1)
    with pytest.raises(Exception) as caught:
        next(iter(loader))
    assert "DataLoader worker process" in str(caught.value)  # torch's wrapping, with the worker's traceback
    assert failures.expected(caught.value) == str(exc)
    with pytest.raises(failures.WorkerFailure) as unwrapped, failures.worker_errors_unwrapped():
        next(iter(loader))
    assert str(unwrapped.value) == str(exc)


def test_bugs_keep_their_traceback() -> None:
    assert failures.expected(KeyError("x")) is None and failures.expected(RuntimeError("boom")) is None
    assert failures.expected(FileNotFoundError(2, "No such file or directory", "/x/y")) == "/x/y: No such file or directory"


def test_prefect_logs_an_expected_failure_as_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from rare.stageflow import OneLineFailures

    monkeypatch.delenv(failures.DEBUG_ENV, raising=False)
    try:
        raise DataError("/d/q.jsonl", 4, "'task_id' is True")
    except DataError:
        record = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "Task run failed with %r",
                                   ("x",), sys.exc_info())
    assert OneLineFailures().filter(record)
    assert record.getMessage() == "error: /d/q.jsonl:4: 'task_id' is True" and record.exc_info is None
    try:
        raise KeyError("a bug")
    except KeyError:
        bug = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert OneLineFailures().filter(bug) and bug.exc_info is not None


def test_weights_are_byte_identical_across_processes(tmp_path: Path) -> None:
    code = ("import sys, torch; from pathlib import Path; from rare.model.io import save_weights; "
            "g = torch.Generator().manual_seed(0); "
            "save_weights({f't{i}': torch.randn(3, 5, generator=g) for i in range(6)}, Path(sys.argv[1]))")
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    blobs = {(tmp_path / n).read_bytes() for n in ("a", "b", "c")}
    assert len(blobs) == 1
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a"), "pt") as f:
        assert f.metadata() == {"format": "pt", "rare_format": "1"} and len(list(f.keys())) == 6


@pytest.mark.slow
def test_a_missing_training_image_is_named_in_one_line(tiny_root: Path, tiny_tokenizer_dir: Path,
                                                      tmp_path: Path) -> None:
    from rare.config.train import TrainParams
    from rare.train.fit import train_variant
    from tests.fixtures.models import tiny_model_params

    images = sorted((tiny_root / "mbeir_images").rglob("*.*"))
    for image in images:
        image.unlink()  # whichever pair the first batch draws, its image is gone
    params = TrainParams(model=tiny_model_params(tiny_tokenizer_dir), batch_size=8, max_steps=2, num_workers=1,
                         cache_dir=str(tmp_path / "cache"))
    with pytest.raises(failures.WorkerFailure) as exc:
        train_variant("none", tiny_root, tmp_path / "model", params)
    message = str(exc.value)
    assert "\n" not in message and "image file not found" in message and str(tiny_root / "mbeir_images") in message
    assert not (tmp_path / "model").exists()
