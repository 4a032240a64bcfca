"""Disk images decoded outside training (validation, the run's test-set numbers, eval, certify)
by DataLoader workers: same bytes and same results as decoding in the main process, which then
decodes none of the evaluation images; in-memory tensors pass through untouched."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastrobust.cli import main
from fastrobust.data import LazyImages, load_dataset
from fastrobust.data import imagefolder as imagefolder_module
from fastrobust.data.disk_loader import decoded, decoded_batches, head
from fastrobust.errors import DataError
from fastrobust.evaluation.settings import EvaluationSettings
from fastrobust.evaluation.workflow import evaluate
from fastrobust.smoothing.settings import CertifySettings
from fastrobust.smoothing.workflow import certify
from fastrobust.training.config import TrainConfig
from fastrobust.training.trainer import fit

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ("ant", "bee", "cat")


def _write_folder(root: Path, n_train: int = 4, n_val: int = 4) -> Path:
    """ROOT/{train,val}/<cls>/<i>.png|.jpg: 12 px pictures, PNG and JPEG alternating."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        for part, count in (("train", n_train), ("val", n_val)):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = rng.integers(0, 120, (12, 12, 3)) + 60 * c  # classes differ in brightness
                pixels = Image.fromarray(base.astype(np.uint8))
                pixels.save(folder / (f"{i:02d}.png" if i % 2 else f"{i:02d}.jpg"))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _write_folder(tmp_path_factory.mktemp("decode") / "data")


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory) -> Path:
    """A 1-epoch fast-L2 small_cnn run on the folder (decoded in the main process)."""
    cfg = _config(folder, tmp_path_factory.mktemp("runs"), workers=0, name="w0")
    return fit(cfg).run_dir


def _config(folder: Path, out: Path, *, workers: int, name: str) -> TrainConfig:
    return TrainConfig(
        dataset="imagefolder", data_dir=str(folder), epochs=1, batch_size=6, workers=workers,
        eval_limit=6, eval_steps=2, overfit_check_size=6, out_dir=str(out), name=name,
        progress=False,
    )  # fmt: skip


@pytest.fixture
def parent_decodes(monkeypatch):
    """The files ``decode_image`` read in this process. Forked DataLoader workers inherit the
    patch, but what they append goes to their own copy of the list, never to this one."""
    calls: list[tuple[int, Path]] = []
    real = imagefolder_module.decode_image

    def spy(path, *args, **kwargs):
        calls.append((os.getpid(), Path(path)))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(imagefolder_module, "decode_image", spy)

    def count(under: Path) -> int:
        """Decodes in this process of the files under ``under``."""
        me = os.getpid()
        return sum(pid == me and path.is_relative_to(under) for pid, path in calls)

    return count


@pytest.mark.parametrize("workers", [0, 2])
def test_decoded_batches_are_the_main_process_bytes_in_order(folder, workers):
    images = load_dataset("imagefolder", folder).test_x
    assert isinstance(images, LazyImages)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))
    got = list(decoded_batches(images, 5, indices=order, workers=workers))
    assert [len(b) for b in got] == [5, 5, 2]
    for lo, batch in zip(range(0, 12, 5), got):
        expected = torch.stack([images.load(int(i)) for i in order[lo : lo + 5]])
        assert batch.dtype == torch.uint8 and torch.equal(batch, expected)
    every = torch.stack([images.load(i) for i in range(len(images))])
    assert torch.equal(torch.cat(list(decoded_batches(images, 7, workers=workers))), every)
    assert torch.equal(decoded(images, order, workers=workers), every[order])
    assert torch.equal(head(images, 3, workers=workers), every[:3])


def test_tensors_pass_through_as_views_or_index_copies():
    x = torch.arange(10 * 3 * 2 * 2, dtype=torch.uint8).reshape(10, 3, 2, 2)
    batches = list(decoded_batches(x, 4, workers=2))
    assert [len(b) for b in batches] == [4, 4, 2]
    for lo, batch in zip((0, 4, 8), batches):  # views of x itself: nothing copied
        assert batch.data_ptr() == x[lo].data_ptr()
    shifted = list(decoded_batches(x, 4, indices=range(3, 9), workers=2))
    assert [b.data_ptr() for b in shifted] == [x[3].data_ptr(), x[7].data_ptr()]
    idx = torch.tensor([9, 0, 4, 4, 1])
    assert all(
        torch.equal(b, x[idx[lo : lo + 2]])
        for lo, b in zip((0, 2, 4), decoded_batches(x, 2, indices=idx))
    )
    assert head(x, 3).data_ptr() == x.data_ptr() and head(x, 30).shape == x.shape


def test_a_corrupt_file_in_a_worker_is_the_one_line_data_error(folder, tmp_path):
    copy = shutil.copytree(folder, tmp_path / "data")
    bad = copy / "val" / "cat" / "03.png"
    bad.write_bytes(b"not a png")
    images = load_dataset("imagefolder", copy).test_x
    with pytest.raises(DataError) as caught:
        list(decoded_batches(images, 4, workers=2))
    text = str(caught.value)
    assert "\n" not in text and "Traceback" not in text and str(bad) in text, text


def test_validation_and_test_numbers_do_not_depend_on_workers_and_leave_the_main_process(
    folder, tmp_path, parent_decodes
):
    val = folder / "val"
    rows, summaries = {}, {}
    for workers in (0, 2):
        before = parent_decodes(val)
        result = fit(_config(folder, tmp_path, workers=workers, name=f"w{workers}"))
        in_parent = parent_decodes(val) - before
        assert (in_parent > 0) if workers == 0 else (in_parent == 0), (workers, in_parent)
        history = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
        keys = ("val_clean_acc", "val_adv_acc", "test_clean_acc", "test_adv_acc")
        rows[workers] = [{k: row[k] for k in keys} for row in history]
        summary = json.loads((result.run_dir / "summary.json").read_text())
        summaries[workers] = {k: summary[k] for k in ("test_clean_acc", "test_adv_acc")}
    assert rows[0] == rows[2] and summaries[0] == summaries[2]


def test_eval_and_certify_do_not_depend_on_workers_and_leave_the_main_process(
    run, folder, tmp_path, parent_decodes
):
    val = folder / "val"
    reports, certified = {}, {}
    for workers in (0, 2):
        before = parent_decodes(val)
        out = tmp_path / f"eval{workers}"
        settings = EvaluationSettings(
            eps=[0, 0.5], steps=2, restarts=2, limit=9, check_size=4, out=str(out),
            progress=False, workers=workers,
        )  # fmt: skip
        evaluate([run], settings)
        cert = tmp_path / f"cert{workers}"
        smoothing = CertifySettings(
            n0=10, n=40, batch_size=40, radii=[0, 0.25], check_size=2, check_steps=2,
            check_samples=2, check_n=20, out=str(cert), progress=False, workers=workers,
        )  # fmt: skip
        certify([run], smoothing)
        in_parent = parent_decodes(val) - before
        assert (in_parent > 0) if workers == 0 else (in_parent == 0), (workers, in_parent)
        doc = json.loads((out / "robustness.json").read_text())
        curve = doc["models"][run.name]
        keys = ("n", "clean_accuracy", "robust", "fooled_by", "checks", "warnings", "data")
        reports[workers] = {k: curve[k] for k in keys}
        models = json.loads((cert / "certified.json").read_text())["models"]
        certified[workers] = {k: {**v, "time_s": None} for k, v in models.items()}
    assert reports[0] == reports[2] and certified[0] == certified[2]
    assert reports[2]["n"] == 9


def test_a_corrupt_eval_image_is_one_line_exit_2_through_the_cli(run, folder, tmp_path, capsys):
    copy = shutil.copytree(folder, tmp_path / "data")
    bad = copy / "val" / "cat" / "02.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    argv = ["eval", str(run), "--data-dir", str(copy), "--workers", "2", "--eps", "0,0.5"]
    code = main([*argv, "--steps", "1", "--restarts", "1", "--out", str(tmp_path / "e"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and str(bad) in err and "Traceback" not in err, err
