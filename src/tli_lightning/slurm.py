"""Runs under SLURM and ``torchrun``: ranks launched from outside, the allocation, preemption and requeue.

- **External launchers.** Under ``srun`` (and ``torchrun``) every rank runs the whole command; rank 0
  chooses the run (a new one, or the one it resumes) and tells the others through a key-value store on
  the address and port the process group uses next (:func:`share_from_rank_zero`).
- **The allocation.** ``--trainer.num_nodes`` and ``--trainer.devices`` must agree with what SLURM gave
  the job (:func:`check_allocation`): one ``error:`` line naming the SLURM variable that disagrees.
- **Requeue.** ``ExactResume`` saves an interruption checkpoint on SIGUSR1 (``#SBATCH --signal=USR1@90``)
  as on SIGTERM; the CLI then asks SLURM to requeue the job (:func:`requeue`, array-aware). The requeued
  job (same job id, or array job and task id, with ``SLURM_RESTART_COUNT`` > 0) continues its own run
  (:func:`own_run`), recorded in the run's ``slurm_job.json`` when the run was claimed. Any other plain
  ``fit`` never resumes. A job is requeued at most ``TLI_MAX_REQUEUES`` times (default
  :data:`DEFAULT_MAX_REQUEUES`), and never after a session that trained nothing: a job that cannot make
  progress (a model that loads slower than the time limit) stops instead of cycling.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from tli_lightning.errors import TLIError

log = logging.getLogger("tli_lightning")
DEFAULT_MAX_REQUEUES = 10
MARKER = "slurm_job.json"  # in a run's log directory: the SLURM job that claimed it
_KEY = "tli_lightning/run"
_stores: list[Any] = []  # kept alive for the process: rank 0 serves the store until the process group shares it


def external_launcher() -> str | None:
    """``"torchelastic"`` or ``"slurm"`` when the ranks were started from outside (Lightning's own detection,
    torchrun first as in Lightning), else None."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return "torchelastic"
    if _slurm_detected(SLURMEnvironment):
        return "slurm"
    return None


def _slurm_detected(environment: Any) -> bool:
    import warnings

    with warnings.catch_warnings():  # its "srun is available but not used" hint: check_allocation says more
        warnings.simplefilter("ignore")
        return environment.detect()


def world_size() -> int:
    """Processes in the job, as the external launcher says (1 without one)."""
    launcher = external_launcher()
    if launcher == "torchelastic":
        return int(os.environ.get("WORLD_SIZE", "1"))
    if launcher == "slurm":
        return int(os.environ.get("SLURM_NTASKS", "1"))
    return 1


def job_key() -> str | None:
    """This SLURM job, as ``scontrol requeue`` names it: ``<array job>_<task>`` for an array task, else the job id."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def restart_count() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def check_allocation(num_nodes: Any, devices: Any) -> None:
    """``num_nodes``/``devices`` against the SLURM allocation, before anything loads (Lightning checks the same
    later, in a traceback). Outside SLURM, under torchrun or in an interactive SLURM shell, nothing to check."""
    if external_launcher() != "slurm":
        return
    env = os.environ
    ntasks, per_node, nodes = env.get("SLURM_NTASKS"), env.get("SLURM_NTASKS_PER_NODE"), env.get("SLURM_NNODES")
    if ntasks and int(ntasks) > 1 and per_node is None:
        raise TLIError(
            f"SLURM_NTASKS={ntasks} without SLURM_NTASKS_PER_NODE: ask for the tasks per node (#SBATCH --nodes=N and "
            "--ntasks-per-node=<GPUs per node>, as slurm/*.sbatch do), not --ntasks"
        )
    if nodes is not None and isinstance(num_nodes, int) and int(nodes) != num_nodes:
        raise TLIError(
            f"--trainer.num_nodes={num_nodes} but SLURM_NNODES={nodes} (the job's nodes): set --trainer.num_nodes "
            f"{nodes}, or #SBATCH --nodes={num_nodes}"
        )
    count = _device_count(devices)
    if per_node is not None and count is not None and int(per_node.split("(")[0]) != count:
        raise TLIError(
            f"--trainer.devices={devices} but SLURM_NTASKS_PER_NODE={per_node} (one task per device): set "
            f"--trainer.devices {per_node}, or #SBATCH --ntasks-per-node={count}"
        )


def _device_count(devices: Any) -> int | None:
    """Devices per node, where the setting says so itself ("auto" and -1 depend on the node: Lightning checks)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        devices = int(text) if text.lstrip("-").isdigit() else None
    if isinstance(devices, int) and devices > 0:
        return devices
    return None


# ---- rank 0 tells the other ranks which run they write into ---------------------------------


def _store(rank: int, timeout_s: float) -> Any:
    """A client of (rank 0: the server of) the TCPStore at the address and port the process group uses next.

    Multi-tenant, as torch's own env:// rendezvous creates it: Lightning's process group on rank 0 then
    reuses this server instead of binding the port again. Under torchrun the agent serves it already.
    """
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
    from torch.distributed import TCPStore

    launcher = external_launcher()
    environment = TorchElasticEnvironment() if launcher == "torchelastic" else SLURMEnvironment(auto_requeue=False)
    host, port = environment.main_address, environment.main_port
    agent = launcher == "torchelastic" and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = TCPStore(
        host,
        port,
        is_master=rank == 0 and not agent,
        timeout=timedelta(seconds=timeout_s),
        wait_for_workers=False,
        multi_tenant=True,
    )
    _stores.append(store)
    return store


def share_from_rank_zero(rank: int, message: dict | None = None, timeout_s: float = 3600.0) -> dict:
    """Rank 0 publishes ``message``; every other rank waits for it (at most ``timeout_s``) and returns it."""
    key = f"{_KEY}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    store = _store(rank, timeout_s)
    if rank == 0:
        store.set(key, json.dumps(message))
        return message or {}
    try:
        return json.loads(store.get(key))
    except RuntimeError as error:  # torch raises a timeout as a RuntimeError subclass
        raise TLIError(f"rank {rank}: rank 0 did not say which run to join within {timeout_s:.0f} s: {error}") from None


# ---- the run a requeued job continues -------------------------------------------------------


def mark_run(log_dir: Path) -> None:
    """Record the SLURM job that claimed this run, so that the job, once requeued, finds it again."""
    key = job_key()
    if key is None:
        return
    from tli_lightning.textfiles import write_json

    write_json(log_dir / MARKER, {"job": key, "job_name": os.environ.get("SLURM_JOB_NAME")})


def own_run(logs: Path, checkpoints: Path) -> int | None:
    """For a requeued job: the version of this name's run that this job claimed and checkpointed, else None."""
    key = job_key()
    if key is None or restart_count() < 1 or not logs.is_dir():
        return None
    found = []
    for marker in logs.glob(f"version_*/{MARKER}"):
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("job") != key:
                continue
        except (OSError, ValueError):
            continue
        version = int(marker.parent.name.removeprefix("version_"))
        if any((checkpoints / marker.parent.name).glob("*.ckpt")):
            found.append(version)
    return max(found, default=None)


def max_requeues() -> int:
    text = os.environ.get("TLI_MAX_REQUEUES", str(DEFAULT_MAX_REQUEUES))
    try:
        return int(text)
    except ValueError:
        raise TLIError(f"TLI_MAX_REQUEUES={text!r} is not a whole number") from None


def requeue(trained: bool) -> str | None:
    """``scontrol requeue`` this job (array-aware), if allowed; what happened, as one line (None outside SLURM)."""
    key = job_key()
    if key is None:
        return None
    limit, count = max_requeues(), restart_count()
    if not trained:
        return f"not requeueing SLURM job {key}: this session trained nothing (requeued, it would stop here again)"
    if count >= limit:
        return f"not requeueing SLURM job {key}: requeued {count} times already (TLI_MAX_REQUEUES={limit})"
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return f"cannot requeue SLURM job {key}: no scontrol on PATH"
    result = subprocess.run([scontrol, "requeue", key], capture_output=True, text=True)
    if result.returncode != 0:
        return f"requeueing SLURM job {key} failed: {(result.stderr or result.stdout).strip()}"
    return f"requeued SLURM job {key} (restart {count + 1} of at most {limit}): it resumes this run when it starts"
