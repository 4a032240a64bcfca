"""The study folder and its stage cache.

Layout (every path below is relative to the study folder)::

    study.yaml            the resolved study config
    state.json            the cache: one entry per piece of work (key, outputs, wall time)
    runs/<label>/         one normal fastrobust run folder per method
    judges/judge-<name>/  run folders of trained judges
    curves/               <label>.json per model, robustness.png, robustness.csv
    timing/               table1.csv/.json, measured.csv, estimate_*.csv, timing.png, steps.json
    figures/<tool>/       grid.png, images.npz, images.json (all models side by side)
    alignment/            <label>.json per model, judges.json, examples.png
    report.md, report.html

A piece of work (``train/fast``, ``curves/fast``, ``table1``, ...) is done when ``state.json``
records it with the same key (a hash of its settings and of its inputs' contents) and all its
outputs still exist. Deleting a run folder therefore reruns that run and only what was made
from it. ``state.json`` is written atomically after every piece, so an interrupted study loses
at most the piece that was running.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE = "state.json"


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (16 hex digits): the identity of a checkpoint or metrics file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able values."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StudyFolder:
    """Paths of one study folder."""

    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def judges(self) -> Path:
        return self.root / "judges"

    @property
    def curves(self) -> Path:
        return self.root / "curves"

    @property
    def timing(self) -> Path:
        return self.root / "timing"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def alignment(self) -> Path:
        return self.root / "alignment"

    def run(self, label: str) -> Path:
        return self.runs / label


class StageCache:
    """``state.json``: which pieces of work are done, with which key and outputs."""

    def __init__(self, root: Path) -> None:
        self.path = root / STATE
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text()).get("done", {})
            except (json.JSONDecodeError, AttributeError):
                self.entries = {}  # an unreadable cache only means redoing work

    def is_done(self, item: str, key: str) -> bool:
        entry = self.entries.get(item)
        if not entry or entry.get("key") != key:
            return False
        return all((self.path.parent / p).exists() for p in entry.get("outputs", []))

    def record(self, item: str, key: str, outputs: list[Path], wall_s: float) -> None:
        root = self.path.parent
        self.entries[item] = {
            "key": key,
            "outputs": [str(Path(p).relative_to(root)) for p in outputs],
            "wall_s": round(wall_s, 3),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self._write()

    def forget(self, item: str) -> None:
        if self.entries.pop(item, None) is not None:
            self._write()

    def wall_s(self, stage: str) -> float:
        """Seconds of every recorded piece of a stage (``train`` sums ``train/*``)."""
        seconds: list[float] = [
            e.get("wall_s", 0.0)
            for item, e in self.entries.items()
            if item == stage or item.startswith(stage + "/")
        ]
        return sum(seconds)

    def _write(self) -> None:
        tmp = self.path.with_name(STATE + ".tmp")
        tmp.write_text(json.dumps({"done": self.entries}, indent=2) + "\n")
        os.replace(tmp, self.path)
