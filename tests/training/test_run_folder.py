import os

import pytest

from fastrobust.distributed import WorldInfo
from fastrobust.errors import CheckpointError, ConfigError
from fastrobust.training.config import TrainConfig
from fastrobust.training.run_folder import RunFolder, TrainResult


def test_create_writes_the_config_and_refuses_an_existing_folder(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), name="r", eps=0.5)
    folder = RunFolder.create(cfg, WorldInfo())
    assert folder.path == tmp_path / "r"
    read, raw = folder.read_config()
    assert read == cfg and raw["attack"]["eps"] == 0.5
    folder.unlock()
    with pytest.raises(ConfigError, match="already exists"):
        RunFolder.create(cfg, WorldInfo())


def test_metrics_and_summary_round_trip(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.read_summary() == {}
    folder.append_metrics({"epoch": 1})
    folder.append_metrics({"epoch": 2})
    assert folder.read_metrics() == [{"epoch": 1}, {"epoch": 2}]
    folder.rewrite_metrics([{"epoch": 1}])
    assert folder.read_metrics() == [{"epoch": 1}]
    folder.write_summary(TrainResult(tmp_path, epochs_done=1, best_epoch=1))
    assert folder.read_summary()["best_epoch"] == 1


def test_a_non_writer_writes_nothing(tmp_path):
    folder = RunFolder(tmp_path / "x", writer=False)
    folder.append_metrics({"epoch": 1})
    folder.write_config(TrainConfig())
    assert not (tmp_path / "x").exists()
    with pytest.raises(CheckpointError, match="config.yaml missing"):
        folder.read_config()


def test_default_names_never_collide(tmp_path):
    """Runs started in the same second get name, name-2, ...: each made by one atomic mkdir."""
    from concurrent.futures import ThreadPoolExecutor

    from fastrobust.training.run_folder import make_run_dir

    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: make_run_dir(tmp_path, None, "same-second"), range(8)))
    assert sorted(p.name for p in paths) == sorted(
        ["same-second"] + [f"same-second-{k}" for k in range(2, 9)]
    )


def test_a_lock_is_exclusive_names_its_owner_and_outlives_no_process(tmp_path):
    from fastrobust.errors import RunFolderLocked
    from fastrobust.training.run_folder import LOCK_FILE, RunLock

    (tmp_path / LOCK_FILE).write_text("999999\n")  # left by a killed run: no one holds it
    first = RunLock(tmp_path)
    first.acquire()  # taken over
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with pytest.raises(RunFolderLocked, match=f"in use by process {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    second = RunLock(tmp_path)
    second.acquire()
    second.release()
