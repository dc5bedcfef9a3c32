"""Connecting to Ray, and sizing the model actors to the cluster.

- No address: start a local Ray (``include_dashboard=False``) sized to this machine.
- ``--address auto`` or ``ray://host:10001`` or ``host:6379``: join that cluster.
A Ray already initialised in this process (tests, notebooks) is used as is and left running.

Actors: on GPU clusters one per GPU (``num_gpus=1``); on CPU-only clusters CPU actors whose
``num_cpus`` add up to the cluster's CPUs minus one (minus half on a one-CPU cluster), so
Ray's own tasks (object transfers, Ray Data reads) always find a CPU.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from pipeline.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ActorLayout:
    count: int
    num_cpus: float
    num_gpus: float
    torch_threads: int


def ray_env() -> None:
    """Environment every Ray start here needs (kept if the user set it)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Initialise Ray; returns True when this call started it (the caller shuts it down)."""
    import ray

    ray_env()
    if ray.is_initialized():
        return False
    try:
        if address is None:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1,
                     include_dashboard=False, log_to_driver=True)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address is None:
            raise ConfigError(f"cannot start a local Ray instance: {exc}\n"
                              "Fix: check free memory and /tmp space, or join a running "
                              "cluster with --address") from exc
        raise ConfigError(
            f"cannot connect to the Ray cluster at {address!r}: {exc}\n"
            "Fix: start one (`ray start --head`) or check the address; --address auto joins "
            "the cluster started on this machine, ray://HOST:10001 a remote one; leave "
            "--address out to start a local Ray") from exc
    return True


def cluster_resources() -> tuple[float, float]:
    """(CPUs, GPUs) of the connected cluster."""
    import ray

    res = ray.cluster_resources()
    return float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))


def local_has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def resolve_device(flag: str, gpus: float | None) -> str:
    """'cpu' or 'cuda' for --device; ``gpus`` is the cluster's GPU count (None: local
    machine, not started yet)."""
    if flag not in DEVICES:
        raise ConfigError(f"--device {flag!r} is not one of {', '.join(DEVICES)}")
    has_gpu = local_has_cuda() if gpus is None else gpus >= 1
    if flag == "auto":
        return "cuda" if has_gpu else "cpu"
    if flag == "cuda" and not has_gpu:
        where = "this machine" if gpus is None else "the Ray cluster"
        raise ConfigError(f"--device cuda, but {where} has no CUDA GPU; use --device cpu "
                          f"(slow: for small models and tests) or run where GPUs are")
    return flag


def default_dtype(device: str) -> str:
    return "bfloat16" if device == "cuda" else "float32"


def actor_layout(device: str, requested: int | None, cpus: float, gpus: float) -> ActorLayout:
    """How many actors and what each reserves."""
    if requested is not None and requested < 1:
        raise ConfigError(f"--actors must be at least 1 (got {requested})")
    if device == "cuda":
        count = requested or max(1, int(gpus))
        spare = max(0.0, cpus - 1.0)
        per_cpu = min(1.0, spare / count) if spare > 0 else 0.0
        return ActorLayout(count, per_cpu, 1.0, max(1, int(per_cpu) or 1))
    reserve = 1.0 if cpus >= 2 else cpus / 2
    usable = max(cpus - reserve, 0.1)
    count = requested or 1
    per_cpu = usable / count
    # Round down to a hundredth so the sum never exceeds what is free.
    per_cpu = math.floor(per_cpu * 100) / 100
    return ActorLayout(count, max(per_cpu, 0.01), 0.0, max(1, int(per_cpu)))
