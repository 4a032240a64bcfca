"""Which GPU kernels a job runs: fp32 precision (IEEE or TF32), cuDNN autotuning, determinism.

PyTorch's defaults are made for training speed: convolutions in float32 run as TF32 on Ampere
and later GPUs (a 10-bit mantissa), and none of this is recorded anywhere. fastrobust states it
per job instead:

* **evaluation** runs in IEEE fp32 unless ``tf32`` is asked for, and without cuDNN autotuning
  (the still-robust set shrinks, so every batch shape would be timed anew). A TF32 re-check
  of an adversarial example on another batch shape can flip its prediction and raise a false
  "the model is not deterministic" masking warning;
* **training** keeps PyTorch's precision and lets cuDNN autotune (``cudnn_benchmark``: the
  batch shape is fixed) unless ``deterministic``, which asks for deterministic kernels only
  (``torch.use_deterministic_algorithms``), the one way a resumed run equals an uninterrupted
  one bitwise on a GPU.

Each setting is applied for the job's duration and restored after (:func:`kernel_settings`).
On a CPU the flags change nothing but are still set and recorded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

#: cuBLAS needs this workspace setting for deterministic matrix products (CUDA >= 10.2)
CUBLAS_WORKSPACE = ":4096:8"


def _conv_backend() -> Any:
    return torch.backends.cudnn.conv if hasattr(torch.backends.cudnn, "conv") else None


def fp32_precision() -> dict[str, str]:
    """How float32 matrix products and cuDNN convolutions run now: ``ieee`` or ``tf32``."""
    conv = _conv_backend()
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9: the new API
        matmul = torch.backends.cuda.matmul.fp32_precision
        return {
            "matmul": "tf32" if matmul == "tf32" else "ieee",
            "conv": "tf32" if conv.fp32_precision == "tf32" else "ieee",
        }
    return {  # pragma: no cover - older torch
        "matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
        "conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee",
    }


def _raw_precision() -> tuple[Any, Any]:
    """The flags as they are set (restored as they were, ``none`` included)."""
    backend = _conv_backend()
    if backend is not None and hasattr(backend, "fp32_precision"):
        return torch.backends.cuda.matmul.fp32_precision, backend.fp32_precision
    return (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )  # pragma: no cover


def _set_raw_precision(matmul: Any, conv: Any) -> None:
    backend = _conv_backend()
    if backend is not None and hasattr(backend, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = matmul
        backend.fp32_precision = conv
    else:  # pragma: no cover - older torch
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = conv


def _set_fp32_precision(matmul: str, conv: str) -> None:
    backend = _conv_backend()
    if backend is not None and hasattr(backend, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = matmul
        backend.fp32_precision = conv
    else:  # pragma: no cover - older torch
        torch.backends.cuda.matmul.allow_tf32 = matmul == "tf32"
        torch.backends.cudnn.allow_tf32 = conv == "tf32"


def kernel_record() -> dict[str, Any]:
    """What results record about the kernels that produced them."""
    precision = fp32_precision()
    return {
        "fp32_matmul": precision["matmul"],
        "fp32_conv": precision["conv"],
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


@contextlib.contextmanager
def kernel_settings(
    *, tf32: bool | None = None, benchmark: bool | None = None, deterministic: bool = False
) -> Iterator[dict[str, Any]]:
    """Run the body with TF32 on or off for float32 (``tf32``; None: leave as it is), cuDNN
    autotuning (``benchmark``; None: leave) and, with ``deterministic``, deterministic kernels
    only (autotuning then off); yields :func:`kernel_record` and restores every flag after."""
    before = _raw_precision(), torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        if tf32 is not None:
            level = "tf32" if tf32 else "ieee"
            _set_fp32_precision(level, level)
        if benchmark is not None:
            torch.backends.cudnn.benchmark = benchmark and not deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True)
        yield kernel_record()
    finally:
        precision, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before
        _set_raw_precision(*precision)
        torch.use_deterministic_algorithms(was_deterministic)
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


# -- host syncs ---------------------------------------------------------------------------------
#: aten ops whose result the host must wait for on a GPU: a value read back (``.item()``,
#: ``bool(t)``, ``float(t)``: ``_local_scalar_dense``; ``if t.any()``: ``is_nonzero``) or an
#: output whose size depends on the data (``nonzero``, ``masked_select``, ``unique``...)
SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",
        "is_nonzero",
        "nonzero",
        "nonzero_static",
        "masked_select",
        "masked_scatter",
        "unique",
        "_unique2",
        "unique_consecutive",
        "repeat_interleave",
        "equal",
        "allclose",
    }
)


class HostSyncs:
    """Counts, per op name, the host syncs the body forced (:func:`count_host_syncs`)."""

    def __init__(self) -> None:
        self.by_op: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def add(self, name: str) -> None:
        self.by_op[name] = self.by_op.get(name, 0) + 1


@contextlib.contextmanager
def count_host_syncs() -> Iterator[HostSyncs]:
    """Count the ops of the body that force a host sync on a GPU, on any device (a CPU too):
    every aten op is seen through a ``TorchDispatchMode``; an op of :data:`SYNC_OPS` counts
    once, and so does indexing with a bool mask (``x[mask]``, ``x[mask] = v``: a ``nonzero``
    inside). On CUDA ``torch.cuda.set_sync_debug_mode`` reports the same syncs as warnings."""
    from torch.utils._python_dispatch import TorchDispatchMode

    syncs = HostSyncs()
    index_ops = {"index", "index_put", "index_put_", "_index_put_impl_"}

    class _Counting(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch: untyped base
        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            name = func._schema.name.split("::")[-1]
            if name in SYNC_OPS:
                syncs.add(name)
            elif name in index_ops and _has_bool_index(args):
                syncs.add(f"{name} (bool mask)")
            return func(*args, **(kwargs or {}))

    with _Counting():  # type: ignore[no-untyped-call]  # torch: TorchDispatchMode.__init__
        yield syncs


def _has_bool_index(args: Any) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype == torch.bool
        for i in (indices or ())
        if i is not None
    )
