"""``fastrobust export``: portable model folders (safetensors, ``config.json``, model card)
and RobustBench ``model_info`` entries. See docs/export.md."""

from fastrobust.export.settings import ExportSettings
from fastrobust.export.workflow import ExportResult, export_model

__all__ = ["ExportResult", "ExportSettings", "export_model"]
