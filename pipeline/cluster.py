"""Connecting to Ray, and sizing the model actors to the cluster.

- No address: start a local Ray (``include_dashboard=False``) sized to this machine, every
  process of it listening on 127.0.0.1 only and asking for a token (Ray's token auth, with a
  fresh random token held only in the environment of this process and of the Ray processes it
  starts: nothing is written to ``~/.ray``, and another user of the machine, who cannot read
  that environment, cannot connect). A ``RAY_AUTH_MODE`` the user set is kept. Its processes
  are recorded and a later local start stops what a killed run left (pipeline.local_ray).
- ``--address auto`` or ``ray://host:10001`` or ``host:6379``: join that cluster with the
  user's own Ray settings (token auth included: nothing is switched off on their behalf).
A Ray already initialised in this process (tests, notebooks) is used as is and left running.
``with ray_output(quiet=True):`` around a run keeps Ray's INFO lines, the actors' output and
their progress bars off the terminal. When stdout or stderr is not a terminal (a log file),
the actor lines Ray forwards carry no colour codes. ``with after_ray_init(callback):`` runs
``callback`` right after each start or join meanwhile (the CLI puts SIGTERM's handler back).

Actors: on GPU clusters one per GPU (``num_gpus=1``); on CPU-only clusters CPU actors whose
``num_cpus`` add up to the cluster's CPUs minus one (minus half on a one-CPU cluster), so
Ray's own tasks (object transfers, the driver's calls) always find a CPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from manifests.limits import DEVICES
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class ActorLayout:
    count: int
    num_cpus: float
    num_gpus: float
    torch_threads: int


LOOPBACK = "127.0.0.1"
# Ray's single-node mode (its default on macOS and Windows): the node's address is the
# loopback one, and then its GCS, raylet, workers and agents all bind 127.0.0.1.
_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Env vars that silence the progress bars of tqdm and of transformers/huggingface_hub.
_QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@dataclass(frozen=True)
class RayOutput:
    quiet: bool = False  # no Ray INFO lines, no progress bars in the actors
    worker_logs: bool = True  # forward the actors' stdout/stderr to this process


_OUTPUT: contextvars.ContextVar[RayOutput | None] = contextvars.ContextVar(
    "kontext_ray_output", default=None)
_AFTER_INIT: contextvars.ContextVar[tuple[Callable[[], object], ...]] = contextvars.ContextVar(
    "kontext_after_ray_init", default=())


@contextlib.contextmanager
def after_ray_init(callback: Callable[[], object]) -> Iterator[None]:
    """Meanwhile, ``callback()`` runs in this thread right after each ``connect`` that starts
    or joins Ray (whether or not that succeeded): ``ray.init`` replaces process-wide state,
    such as SIGTERM's handler, that a caller may need to put back (pipeline.cli)."""
    token = _AFTER_INIT.set((*_AFTER_INIT.get(), callback))
    try:
        yield
    finally:
        _AFTER_INIT.reset(token)


def _init_ray(address: str | None, num_cpus: int | None) -> None:
    import ray

    try:
        if address is None:
            start_local(num_cpus)
        else:
            ray.init(address=address, **_init_options())
    finally:
        for callback in _AFTER_INIT.get():
            callback()


@contextlib.contextmanager
def ray_output(*, quiet: bool = False, worker_logs: bool | None = None) -> Iterator[None]:
    """What Ray started or joined meanwhile (in this thread) prints: ``quiet`` silences Ray's
    INFO lines and the actors' output and progress bars; ``worker_logs=False`` only keeps the
    actors' output off this process's stdout/stderr (it stays in Ray's log files)."""
    forward = (not quiet) if worker_logs is None else worker_logs
    token = _OUTPUT.set(RayOutput(quiet=quiet, worker_logs=forward))
    try:
        yield
    finally:
        _OUTPUT.reset(token)


def _init_options() -> dict[str, Any]:
    output = _OUTPUT.get() or RayOutput()
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": output.worker_logs}
    if output.quiet:
        options["logging_level"] = logging.WARNING  # "Started a local Ray instance." is INFO
        options["runtime_env"] = {"env_vars": dict(_QUIET_ENV)}
    return options


@contextlib.contextmanager
def _single_node_mode() -> Iterator[None]:
    """While a local Ray starts: its node address is 127.0.0.1. The processes it starts
    inherit the environment variable; Ray reads it at import, so an imported Ray is told too."""
    from ray._private import ray_constants

    saved_env, saved = os.environ.get(_SINGLE_NODE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_NODE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        # Restored once started: a later ray.init in this process may join a real cluster.
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(_SINGLE_NODE_ENV, None)
        else:
            os.environ[_SINGLE_NODE_ENV] = saved_env


def start_local(num_cpus: int | None = None) -> None:
    """Start a Ray on this machine that only listens on 127.0.0.1, after stopping what a
    killed earlier run left, and record its processes."""
    import ray

    from pipeline.local_ray import record_local_ray, stop_leftovers

    stop_leftovers()
    _local_token_auth()
    with _single_node_mode():
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1,
                 _node_ip_address=LOOPBACK, **_init_options())
    record_local_ray()


def _local_token_auth() -> None:
    """Token auth for a local Ray: loopback keeps other machines out, the token keeps other
    users of this one out (any process that reaches Ray's GCS can run code as us). The token
    lives in the environment only (Ray reads ``RAY_AUTH_TOKEN`` first and writes no token file
    then); the Ray processes inherit it, other users cannot read it. The user's own
    ``RAY_AUTH_MODE`` (``disabled`` included), ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``
    is kept; a later local start in this process reuses the token set here."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    _reload_ray_auth()


def _reload_ray_auth() -> None:
    """This process's Ray read the auth mode and token at import: re-read them, as Ray's own
    ray.init does when it switches token auth on by default."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _plain_when_not_a_terminal() -> None:
    """Output to a log file or a pipe gets no colour codes: Ray colours the "(EditorActor
    pid=...)" prefix of the actor lines it forwards unless told not to."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Initialise Ray; returns True when this call started it (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    _plain_when_not_a_terminal()
    try:
        _init_ray(address, num_cpus)
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
