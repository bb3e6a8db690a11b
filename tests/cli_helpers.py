"""Running the real entry point, `python -m tli_lightning`, the way a user does, and reading what a run wrote."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# Small but complete: every callback runs, every step is logged.
QUICK = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
    "--data.reasoning_limit=6",
]
# Trainable tensors of each shipped arm on the tiny model (4 blocks of 7 linear layers and 2 norms): what each
# recipe says it trains, counted independently of the code that selects them.
TRAINABLE_ON_TINY = {
    "tli_lora_early": 2 * 2 * 2,  # blocks 0-1, q and v, LoRA A and B
    "lora_early_bf16": 2 * 2 * 2,  # the same LoRA on an unquantized base
    "lora_all": 4 * 2 * 2,  # every block
    "full_early": 2 * 9,  # blocks 0-1, every weight
    "full_all": 1 + 4 * 9 + 1,  # embeddings, every block, final norm; never the LM head
}
# A shipped 8B recipe on the embedded tiny model and the bundled data, everything else as shipped.
ON_TINY = [
    "--model.model_name_or_path=tiny",
    "--data.lexicon_path=demo",
    "--data.control_path=demo",
    "--data.reasoning_tasks=null",  # the bundled demo examples of each task
]


def cli(args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m tli_lightning ARGS`` in ``cwd``, with tests/ importable (for injected callbacks)."""
    environment = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tli_lightning", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fit_probed(configs: list[Path], root: Path, extra: list[str] = ()) -> tuple[subprocess.CompletedProcess, dict]:
    """A shipped recipe (``configs`` in order) on the tiny model for 3 optimizer steps, checked from inside by
    ``probes.ArmProbe``: the run's result and what the probe found (empty if the run failed before writing it)."""
    probe = root / "probe.json"
    args = [arg for config in configs for arg in ("--config", str(config))]
    result = cli(
        [
            "fit",
            *args,
            *ON_TINY,
            *QUICK,
            *extra,
            "--data.reasoning_limit=3",
            "--trainer.max_steps=3",
            "--trainer.callbacks+=probes.ArmProbe",
            f"--trainer.callbacks.report={probe}",
        ],
        root,
    )
    return result, json.loads(probe.read_text()) if probe.is_file() else {}


def run_main(args: list[str]) -> tuple[int, str, str]:
    """The CLI's ``main`` in this process: (exit code, stdout, stderr)."""
    from tli_lightning.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a run's TensorBoard files, as (step, value), honouring purge events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def image_tags(run_dir: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    return events.Tags()["images"]
