"""The ``README.md`` model card of an exported folder: what the model is, how it was
trained, what it measured (each number with the command that measured it), the data it
needs and how to load it. Hugging Face Hub front matter on top, so the Hub renders it."""

from __future__ import annotations

from typing import Any


def _front_matter(doc: dict[str, Any]) -> list[str]:
    tags = ["adversarial-robustness", "fastrobust", "safetensors"]
    if doc.get("training", {}).get("method"):
        tags.append(str(doc["training"]["method"]))
    lines = ["---", "library_name: fastrobust", "tags:"] + [f"- {t}" for t in tags]
    if doc.get("dataset"):
        lines += ["datasets:", f"- {doc['dataset']}"]
    return [*lines, "---", ""]


def _what(doc: dict[str, Any]) -> list[str]:
    spec = doc["model_spec"]
    threat = doc.get("threat_model")
    method = doc.get("training", {}).get("method")
    trained = (
        f"trained with fastrobust's `{method}` method against {threat['norm']} perturbations "
        f"of radius {threat['eps']:g}"
        if threat
        else (f"trained with fastrobust's `{method}` method" if method else "trained elsewhere")
    )
    source = doc["source"]
    return [
        f"# {doc['name']}",
        "",
        f"A `{doc['architecture']}` image classifier ({spec['num_classes']} classes, "
        f"{spec['in_channels']}x{spec['image_size']}x{spec['image_size']} images in [0, 1]) "
        f"{trained}. Exported by fastrobust {doc['fastrobust_version']} from "
        f"`{source['file']}` ({source['layout']} layout).",
        "",
    ]


def _training(doc: dict[str, Any]) -> list[str]:
    config = doc.get("training", {}).get("config")
    if not config:
        return ["## How it was trained", "", "Not recorded (a checkpoint written elsewhere).", ""]
    keys = ["dataset", "method", "norm", "eps", "epochs", "batch_size", "lr", "schedule"]
    keys += ["attack_steps", "seed"]
    rows = [f"| {k} | {config[k]} |" for k in keys if config.get(k) is not None]
    return [
        "## How it was trained",
        "",
        "| setting | value |",
        "|---|---|",
        *rows,
        "",
        "The whole recorded config is in `config.json` (`training.config`).",
        "",
    ]


def _measured(doc: dict[str, Any]) -> list[str]:
    rows = doc.get("evaluations") or []
    lines = ["## Measured accuracy", ""]
    if not rows:
        return [*lines, "No evaluation recorded.", ""]
    lines += [
        "| evaluation | test images | clean | robust | measured by |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['what']} | {row['images']} | {row['clean_acc']:.4f} | "
            f"{row['robust_acc']:.4f} | `{row['command']}` |"
        )
    return [*lines, ""]


def _data(doc: dict[str, Any]) -> list[str]:
    spec = doc["model_spec"]
    classes = doc.get("classes")
    named = ", ".join(map(str, classes)) if classes else "not recorded"
    return [
        "## Data it needs",
        "",
        f"{doc.get('dataset') or 'The dataset it was trained on'}: float images in [0, 1] of "
        f"shape {spec['in_channels']}x{spec['image_size']}x{spec['image_size']} (N, C, H, W). "
        f"The normalisation (mean {spec['mean']}, std {spec['std']}) is inside the model: do "
        f"not normalise the inputs. Classes, in label order: {named}.",
        "",
    ]


def _load(doc: dict[str, Any]) -> list[str]:
    return [
        "## How to load it",
        "",
        "```python",
        "import fastrobust",
        'model = fastrobust.load_model("path/to/this/folder")  # eval mode, [0,1] images',
        "logits = model(images)",
        "```",
        "",
        "Without fastrobust's loader, with plain `safetensors` and the model class:",
        "",
        "```python",
        "import json; from safetensors.torch import load_file; from fastrobust.exported import build_exported",  # noqa: E501
        'model = build_exported(json.load(open("config.json")))',
        'model.load_state_dict(load_file("model.safetensors")); model.eval()',
        "```",
        "",
    ]


def model_card(doc: dict[str, Any]) -> str:
    """The model card of an exported folder whose ``config.json`` is ``doc``."""
    parts = _front_matter(doc) + _what(doc) + _training(doc) + _measured(doc)
    return "\n".join(parts + _data(doc) + _load(doc))
