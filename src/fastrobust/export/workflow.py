"""``fastrobust export``: a run folder or a checkpoint as a portable model folder.

The folder holds ``model.safetensors`` (the weights, tensors only), ``config.json`` (what
the model is: :mod:`fastrobust.exported`) and a ``README.md`` model card
(:mod:`fastrobust.export.card`). With ``robustbench`` it also runs (or reuses) an AutoAttack
standard evaluation on the whole test set (``autoattack/robustness.json``) and writes
RobustBench's ``model_info`` entry (:mod:`fastrobust.export.robustbench`). Checkpoints of
MadryLab's ``robustness`` and torchvision-layout ResNets export the same way: the safe path
out of pickles. Everything is written into a temporary folder beside the target and renamed
into place at the end, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from fastrobust.checkpoint import load_checkpoint, load_model, resolve_checkpoint
from fastrobust.errors import CheckpointError, ConfigError, OutputError
from fastrobust.export.card import model_card
from fastrobust.export.robustbench import (
    LEADERBOARD_DATASETS,
    THREAT_FOLDERS,
    model_info_entry,
)
from fastrobust.export.settings import SECTION, ExportSettings
from fastrobust.exported import CONFIG_FILE, EXPORT_FORMAT, EXPORT_VERSION, WEIGHTS_FILE
from fastrobust.model_info import ModelInfo, model_info
from fastrobust.models import NormalizedModel
from fastrobust.models.foreign import infer_shape
from fastrobust.outputs import check_output_dir, writing
from fastrobust.version import __version__

log = logging.getLogger(__name__)

#: the AutoAttack evaluation's folder inside an export
AUTOATTACK_DIR = "autoattack"


@dataclass
class ExportResult:
    """Where the export went and what it measured."""

    out: Path
    files: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    """the ``config.json`` written"""
    robustbench: Path | None = None
    """the RobustBench ``model_info`` JSON, when asked for"""


def export_folder(source: Path, settings: ExportSettings) -> Path:
    """The export's folder, checked before any work: an existing one needs ``force``."""
    name = f"{SECTION}.out"
    stem = source.name if source.is_dir() else source.stem
    out = Path(settings.out).expanduser() if settings.out else source.parent / f"{stem}-export"
    if out.exists() and not settings.force and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"{name} {out} already exists; give {SECTION}.force to replace it", field=name
        )
    check_output_dir(out.parent, field=name)
    return out


def _source(source: Path, settings: ExportSettings) -> tuple[nn.Module, str, Path]:
    """The model to export, its layout and the file it came from."""
    file = resolve_checkpoint(source)
    model = load_model(source, arch=settings.arch, dataset=settings.dataset)
    try:
        load_checkpoint(file)
        layout = "fastrobust"
    except CheckpointError:
        layout = "foreign (robustness or torchvision ResNet)"
    return model, layout, file


def _resnet_shape(model: nn.Module) -> dict[str, Any] | None:
    """Depth, stem and width of a ResNet that the registry cannot rebuild by name."""
    from fastrobust.models import MODELS

    info = model_info(model)
    if not isinstance(model, NormalizedModel) or info.spec is None:
        return None
    try:
        shape = infer_shape(dict(model.net.state_dict()))
    except (CheckpointError, KeyError, ValueError):
        return None
    if shape.registered and info.spec.name in MODELS:
        return None
    return {"depth": shape.depth, "stem": shape.stem, "width": shape.width}


def _training_rows(file: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's recorded config, and the test-set numbers training measured on ``file``."""
    run = file.parent
    try:
        state = load_checkpoint(file)
    except CheckpointError:
        return {}, []
    config = dict(state.get("config") or {})
    summary_path = run / "summary.json"
    if not summary_path.is_file():
        return config, []
    summary = json.loads(summary_path.read_text())
    prefix = "best_test" if file.name == "best.pt" else "test"
    clean, robust = summary.get(f"{prefix}_clean_acc"), summary.get(f"{prefix}_adv_acc")
    if clean is None or robust is None:
        return config, []
    steps = config.get("eval_steps")
    row = {
        "what": f"PGD-{steps} {config.get('norm')} eps={config.get('eps')} (end of training, "
        f"{file.name})",
        "images": summary.get("test_images"),
        "clean_acc": clean,
        "robust_acc": robust,
        "command": f"fastrobust train --config {run / 'config.yaml'} (summary.json)",
    }
    return config, [row]


def _threat(info: ModelInfo, settings: ExportSettings) -> tuple[str, float]:
    norm, eps = settings.norm or info.norm, settings.eps or info.eps
    if norm is None or eps is None:
        raise ConfigError(
            f"{SECTION}.robustbench needs the threat model: this model records none; give "
            f"{SECTION}.norm and {SECTION}.eps",
            field=f"{SECTION}.norm",
        )
    return norm, float(eps)


def _reused(path: Path, norm: str, eps: float) -> dict[str, Any]:
    """The curve of a robustness.json that is an AutoAttack evaluation on the whole test set
    at ``norm``/``eps``, or ConfigError saying why it is not."""
    name = f"{SECTION}.evaluation"
    file = path / "robustness.json" if path.is_dir() else path
    try:
        doc = json.loads(file.read_text())
        (curve,) = doc["models"].values()
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{name} {file} is not one model's robustness.json ({exc})", field=name
        ) from None
    settings = doc.get("settings", {})
    why = None
    if curve.get("version") != "autoattack":
        why = "it is not AutoAttack's standard version (--attack autoattack)"
    elif settings.get("limit") is not None:
        why = f"it ran on {settings['limit']} test points, not the whole test set"
    elif curve.get("norm") != norm or not any(abs(e - eps) < 1e-12 for e in curve["eps"]):
        why = f"it is not at {norm} eps={eps:g}"
    if why:
        raise ConfigError(f"{name} {file} cannot be reused: {why}", field=name)
    return {"doc": doc, "curve": curve, "file": file}


def _autoattack(
    source: Path, norm: str, eps: float, settings: ExportSettings, staging: Path
) -> dict[str, Any]:
    """Run (or reuse) the AutoAttack evaluation; its report lands in ``staging/autoattack``."""
    target = staging / AUTOATTACK_DIR
    if settings.evaluation:
        found = _reused(Path(settings.evaluation).expanduser(), norm, eps)
        target.mkdir()
        shutil.copy2(found["file"], target / "robustness.json")
        command = f"reused {found['file']}"
        curve = found["curve"]
    else:
        from fastrobust.evaluation import EvaluationSettings, evaluate

        evaluation = EvaluationSettings(
            attacks=["autoattack"], norm=norm, eps=[eps], dataset=settings.dataset,  # type: ignore[arg-type]
            data_dir=settings.data_dir, arch=settings.arch, out=str(target),
            batch_size=settings.batch_size, device=settings.device, progress=settings.progress,
        )  # fmt: skip
        result = evaluate([source], evaluation)
        curve = next(iter(result.curves.values())).to_dict()
        command = f"fastrobust eval {source} --attack autoattack --norm {norm} --eps {eps:g}"
    index = min(range(len(curve["eps"])), key=lambda i: abs(curve["eps"][i] - eps))
    return {
        "what": f"AutoAttack (standard) {norm} eps={eps:g}",
        "images": curve["n"],
        "clean_acc": curve["clean_accuracy"],
        "robust_acc": curve["accuracy"][index],
        "command": command,
        "report": f"{AUTOATTACK_DIR}/robustness.json",
    }


def _config(
    model: nn.Module, layout: str, file: Path, training: dict[str, Any], name: str
) -> dict[str, Any]:
    info = model_info(model)
    if info.spec is None:
        raise CheckpointError(f"{file} records no model spec: nothing to export")
    threat = {"norm": info.norm, "eps": info.eps} if info.adversarially_trained else None
    doc: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "fastrobust_version": __version__,
        "name": name,
        "architecture": info.spec.name,
        "model_spec": info.spec.to_dict(),
        "classes": list(info.classes) if info.classes else None,
        "dataset": info.dataset,
        "input": "float images in [0,1], N x C x H x W; the normalisation is inside the model",
        "normalization": {"mean": info.spec.mean, "std": info.spec.std},
        "threat_model": threat,
        "training": {"method": info.method, "epochs": info.epoch, "config": training},
        "source": {"file": str(file.resolve()), "layout": layout},
    }
    shape = _resnet_shape(model)
    if shape is not None:
        doc["resnet"] = shape
    return doc


def _write_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt", "fastrobust": __version__})


def _robustbench(
    doc: dict[str, Any], row: dict[str, Any], settings: ExportSettings, norm: str, eps: float
) -> tuple[Path, dict[str, Any]]:
    dataset = str(doc.get("dataset") or settings.dataset or "unknown")
    if dataset not in LEADERBOARD_DATASETS:
        log.warning(
            "RobustBench's L2/Linf leaderboards hold %s; this entry is for %s",
            ", ".join(LEADERBOARD_DATASETS),
            dataset,
        )
    hand = dataclasses.asdict(settings)
    hand["architecture"] = settings.architecture or doc["architecture"]
    entry = model_info_entry(
        hand, dataset=dataset, norm=norm, eps=eps,
        clean=row["clean_acc"], autoattack=row["robust_acc"],
    )  # fmt: skip
    rel = Path("robustbench") / dataset / THREAT_FOLDERS[norm] / f"{settings.robustbench}.json"
    return rel, entry


def export_model(source: str | Path, settings: ExportSettings | None = None) -> ExportResult:
    """Export a run folder or checkpoint (see the module docstring); returns what was written."""
    settings = settings or ExportSettings()
    src = Path(source).expanduser()
    out = export_folder(src, settings)
    model, layout, file = _source(src, settings)
    training, rows = _training_rows(file)
    norm, eps = _threat(model_info(model), settings) if settings.robustbench else ("", 0.0)
    doc = _config(model, layout, file, training, settings.robustbench or out.name)
    with writing("the export", out.parent):
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        result = ExportResult(out)
        if settings.robustbench:
            rows.append(_autoattack(src, norm, eps, settings, staging))
        doc["evaluations"] = rows
        with writing("the export", staging):
            _write_weights(model, staging / WEIGHTS_FILE)
            (staging / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n")
            (staging / "README.md").write_text(model_card(doc))
            if settings.robustbench:
                rel, entry = _robustbench(doc, rows[-1], settings, norm, eps)
                (staging / rel).parent.mkdir(parents=True)
                (staging / rel).write_text(json.dumps(entry, indent=2) + "\n")
                result.robustbench = out / rel
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.config = doc
    result.files = sorted(p for p in out.rglob("*") if p.is_file())
    return result


def _replace(staging: Path, out: Path) -> None:
    """Move the finished export into place (an existing one, with force, is removed first)."""
    try:
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except OSError as exc:
        raise OutputError(f"could not move the export into {out} ({exc.strerror})") from None
