"""Device and precision selection: one place decides CPU vs CUDA, AMP and pinned memory."""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Iterator, Literal

import torch

logger = logging.getLogger(__name__)

DevicePreference = Literal["auto", "cpu", "cuda"]
PrecisionPreference = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed.

    Attributes:
        device: the torch device.
        amp_dtype: dtype for autocast, or None for full fp32.
        pin_memory: whether DataLoaders should pin host memory (CUDA only).
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    pin_memory: bool

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the forward pass (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is active only for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)


#: /proc/cpuinfo flags of x86 CPUs that compute bf16 natively (AVX-512 BF16, AMX).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux x86: a flag in /proc/cpuinfo).

    There, bf16 autocast makes the VAE's training step about 1.4-1.6x faster at equal quality per
    step (benchmarks/vae_learning_curve.py); elsewhere bf16 is emulated and slower than fp32.
    """
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool(NATIVE_BF16_FLAGS & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def select_runtime(
    device: DevicePreference = "auto",
    precision: PrecisionPreference = "auto",
    threads: int | None = None,
) -> Runtime:
    """Choose the device and precision and log the choice.

    Args:
        device: ``auto`` takes CUDA when available, else CPU; ``cuda`` fails clearly
            if no GPU is visible.
        precision: ``auto`` is bf16 autocast on GPUs that support it (fp16 otherwise), bf16
            on CPUs that compute it natively (:func:`cpu_has_native_bf16`) and fp32 on other CPUs.
            Precision-critical inference (the latent cache, the samplers' predictions) runs
            in fp32 whatever the autocast.
        threads: CPU threads for torch (``torch.set_num_threads``); None leaves torch's default.
    """
    if threads is not None and threads > 0:
        torch.set_num_threads(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "compute.device is 'cuda' but no CUDA GPU is visible to torch. "
            "Set compute.device: auto (or cpu) in the config, or run on a GPU node."
        )
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    dev = torch.device("cuda" if use_cuda else "cpu")
    amp_dtype: torch.dtype | None
    if precision == "auto" and not use_cuda:
        amp_dtype = torch.bfloat16 if cpu_has_native_bf16() else None
    elif precision == "fp32":
        amp_dtype = None
    elif precision == "auto":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        amp_dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    runtime = Runtime(device=dev, amp_dtype=amp_dtype, pin_memory=use_cuda)
    name = torch.cuda.get_device_name(dev) if use_cuda else "CPU"
    logger.info(
        "runtime: device=%s (%s), autocast=%s, pin_memory=%s, torch threads=%d",
        dev, name, amp_dtype, runtime.pin_memory, torch.get_num_threads(),
    )
    return runtime


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Temporarily put ``module`` in eval mode, restoring its previous mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
