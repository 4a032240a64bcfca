import pickle

import pytest
import torch

from fastrobust import load_model
from fastrobust.checkpoint import load_checkpoint, save_checkpoint
from fastrobust.errors import CheckpointError


def test_atomic_save_leaves_no_temp_files_and_loads(tmp_path):
    save_checkpoint(tmp_path / "a.pt", {"x": torch.ones(3), "meta": {"k": [1, 2.0, "s", None]}})
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    state = load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(state["x"], torch.ones(3)) and state["meta"]["k"] == [1, 2.0, "s", None]


def test_failed_save_keeps_the_previous_file(tmp_path):
    save_checkpoint(tmp_path / "a.pt", {"v": torch.zeros(1)})

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path / "a.pt", {"v": Unsaveable()})
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["v"], torch.zeros(1))


def test_code_carrying_pickle_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"fastrobust_format": 1, "model": Evil()}, fh)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_foreign_and_empty_run_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not written by fastrobust"):
        load_model(tmp_path / "foreign.pt")
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="not a fastrobust run folder"):
        load_model(tmp_path / "run")


def test_checkpoint_with_mismatched_weights(tmp_path):
    spec = {
        "name": "small_cnn",
        "num_classes": 10,
        "in_channels": 1,
        "image_size": 8,
        "mean": [0.0],
        "std": [1.0],
    }
    save_checkpoint(
        tmp_path / "m.pt", {"model": {"net.0.weight": torch.ones(1)}, "model_spec": spec}
    )
    with pytest.raises(CheckpointError, match="do not fit the small_cnn"):
        load_model(tmp_path / "m.pt")
