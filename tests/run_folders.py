"""Run folders as the trainer writes them, with chosen per-epoch times and accuracies (tests)."""

import json

from fastrobust.training.config import TrainConfig


def fake_run(root, name, method, elapsed, acc, world_size=1, batch_size=128, clean=None):
    """A run folder as the engine writes it, with chosen per-epoch times and accuracies."""
    run = root / name
    run.mkdir(parents=True)
    TrainConfig(method=method, batch_size=batch_size, epochs=len(elapsed)).write_yaml(
        run / "config.yaml"
    )
    rows = [
        {"epoch": i + 1, "train_loss": 1.0, "elapsed_s": t, "val_adv_acc": a}
        for i, (t, a) in enumerate(zip(elapsed, acc))
    ]
    for row, c in zip(rows, clean or []):
        row["val_clean_acc"] = c
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"world_size": world_size}))
    return run
