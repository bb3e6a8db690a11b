"""What a run was made of, for ``summary.json``'s ``provenance``: the package's version and git commit,
library versions, hardware, the base model's identity, the data files' hashes, and the cost in time and memory.

Every part is best effort: a run never fails because its provenance could not be read (a missing ``git``, a
hub model not in the local cache); the field is then null.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "lightning", "transformers", "peft", "bitsandbytes", "datasets", "torchmetrics")
# Files over twice this size are hashed by their first and last CHUNK bytes: safetensors files open with a header
# naming every tensor with its dtype, shape and offsets, and their last bytes are weights; reading every byte of
# an 8B model (16 GB) for a summary would take minutes.
CHUNK = 4 * 2**20
FINGERPRINT_METHOD = (
    "sha256 over the model directory's files (sorted by name; hidden files and *.md skipped): each file's name and "
    f"size, and its whole content, or for files over {2 * CHUNK // 2**20} MiB its first and last "
    f"{CHUNK // 2**20} MiB (safetensors headers list every tensor's name, shape and offset)"
)


def package() -> dict[str, Any]:
    """``{"version", "git_commit", "git_dirty"}``: git fields null when the package is not a git checkout."""
    from tli_lightning import __version__

    source = Path(__file__).resolve().parent
    commit = _git(source, "rev-parse", "HEAD")
    # A package installed inside some other repository (e.g. a venv in a project) is not that repository's code.
    tracked = commit is not None and _git(source, "ls-files", "--error-unmatch", "__init__.py") is not None
    # Only changes to tracked files: a run's own outputs (logs, scan.json) are not changes to the code.
    status = _git(source, "status", "--porcelain", "--untracked-files=no") if tracked else None
    return {
        "version": __version__,
        "git_commit": commit if tracked else None,
        "git_dirty": None if status is None else bool(status.strip()),
    }


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def libraries() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware(trainer: Any) -> dict[str, Any]:
    """The machine, and the accelerator and devices the trainer ran on (names of this node's CUDA devices)."""
    device = trainer.strategy.root_device
    devices: list[str] = []
    if device.type == "cuda":
        import torch

        devices = [torch.cuda.get_device_name(index) for index in trainer.device_ids]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "accelerator": device.type,
        "devices": devices,
        "world_size": trainer.world_size,
    }


def base_model(name_or_path: str, config: Any = None) -> dict[str, Any]:
    """The base model as given, where its files are, the hub revision if known, and a content fingerprint."""
    from tli_lightning.tiny_model import embedded_model_dir

    resolved, revision = _local_model_dir(name_or_path, embedded_model_dir)
    revision = revision or getattr(config, "_commit_hash", None)  # set by transformers before 5
    fingerprint, method = None, "not computed: the model's files were not found on this machine"
    if resolved is not None:
        try:
            fingerprint, method = directory_fingerprint(resolved), FINGERPRINT_METHOD
        except OSError as error:
            method = f"not computed: {error}"
    return {
        "name_or_path": name_or_path,
        "resolved_path": None if resolved is None else str(resolved),
        "revision": revision,
        "fingerprint": fingerprint,
        "fingerprint_method": method,
    }


def _local_model_dir(name_or_path: str, embedded_model_dir: Any) -> tuple[Path | None, str | None]:
    embedded = embedded_model_dir(name_or_path)
    if embedded is not None:
        return embedded, None
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return local.resolve(), None
    try:  # a hub id: the snapshot from_pretrained loaded (refs/main), without the network
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
    except Exception:  # an id the hub client refuses, or no hub client: nothing to find
        return None, None
    if not isinstance(cached, str):
        return None, None
    snapshot = Path(cached).parent
    return snapshot, snapshot.name if snapshot.parent.name == "snapshots" else None


def directory_fingerprint(directory: Path) -> str:
    """See ``FINGERPRINT_METHOD``; cheap at any model size (at most 8 MiB read per file)."""
    digest = hashlib.sha256()
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or path.suffix == ".md" or not path.is_file():
            continue
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as handle:
            if size <= 2 * CHUNK:
                digest.update(handle.read())
            else:
                digest.update(handle.read(CHUNK))
                handle.seek(size - CHUNK)
                digest.update(handle.read(CHUNK))
    return digest.hexdigest()


def file_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    except OSError:
        return {"path": str(path), "sha256": None}


def peak_memory(device: Any) -> tuple[int, str]:
    """The process's peak memory so far: CUDA's max allocated on ``device`` (across the evaluations' resets), or the
    peak resident set size on a CPU."""
    if device.type == "cuda":
        import torch

        from tli_lightning.callbacks._common import peak_before_resets

        return max(torch.cuda.max_memory_allocated(device), peak_before_resets()), "cuda_max_allocated"
    import resource  # POSIX only, like the CPU peak it reads

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss if sys.platform == "darwin" else rss * 1024), "process_max_rss"  # macOS: bytes; Linux: KiB
