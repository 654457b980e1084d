"""The torch device a command runs on, from its `--device` option (shared by train and predict)."""

from __future__ import annotations

import torch

from kidneyseg.errors import KidneysegError


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` (CUDA if available, else CPU), `cpu`, `cuda` (the `local_rank` GPU) or `cuda:N`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise KidneysegError(f"device {name!r} asked for, but torch sees no CUDA device")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    raise KidneysegError(f"unknown device {name!r}; choose auto, cpu, cuda or cuda:N")
