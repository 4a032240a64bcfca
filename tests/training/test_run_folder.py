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
