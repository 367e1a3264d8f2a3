"""The torch device a command or the app runs on, checked where it is given: a device this machine lacks is a one-line
error before anything loads, not a CUDA traceback minutes into a run."""

from __future__ import annotations

import torch

from tvr_demo.errors import DeviceError


def default_device(device: str | None = None) -> torch.device:
    """cuda when present unless told otherwise; a device that is not here raises DeviceError."""
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {device} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: no CUDA device is available to PyTorch on this machine (no GPU, no "
                          "NVIDIA driver, or a CPU-only torch build); use --device cpu, or leave --device out")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise DeviceError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {device}: Apple's MPS backend is not available here; use --device cpu")
    return dev
