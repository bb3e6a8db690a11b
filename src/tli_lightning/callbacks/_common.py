"""What the callbacks share: finding the model, splitting work across ranks, writing results."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from tli_lightning.errors import TLIError
from tli_lightning.textfiles import without_nan, write_json  # noqa: F401 (re-exported for the callbacks)

Getter = Callable[[L.LightningModule], Any]


def default_model(pl_module: L.LightningModule) -> torch.nn.Module:
    return _attribute(pl_module, "model")


def default_tokenizer(pl_module: L.LightningModule) -> Any:
    return _attribute(pl_module, "tokenizer")


def _attribute(pl_module: L.LightningModule, name: str) -> Any:
    value = getattr(pl_module, name, None)
    if value is None:
        raise TLIError(
            f"{type(pl_module).__name__} has no `{name}` attribute: expose the Hugging Face causal LM as "
            "`.model` and its tokenizer as `.tokenizer`, or pass get_model=/get_tokenizer= to the callback"
        )
    return value


def given_or_from_datamodule(given: Any, trainer: L.Trainer, attribute: str, owner: str, argument: str) -> Any:
    """What a measurement was given, else the DataModule's ``attribute``; a clear error when neither exists."""
    if given is not None:
        return given
    found = getattr(trainer.datamodule, attribute, None)
    if found is None:
        raise TLIError(f"{owner} needs {argument}=..., or a DataModule with `{attribute}`")
    return found


def shard(trainer: L.Trainer, items: Sequence[Any]) -> Sequence[Any]:
    """This rank's contiguous share of ``items`` (every item goes to exactly one rank)."""
    per_rank = -(-len(items) // trainer.world_size)
    return items[trainer.global_rank * per_rank : (trainer.global_rank + 1) * per_rank]


def gather_rows(trainer: L.Trainer, rows: Tensor, total: int) -> Tensor:
    """Reassemble the ``[len(shard), ...]`` results of :func:`shard` into ``[total, ...]`` in item order.

    Shards are padded to one length for the all-gather and the padding is cut off afterwards
    (unlike DistributedSampler, nothing is counted twice). The result stays on the rank's device.
    """
    world = trainer.world_size
    if world == 1:
        return rows
    per_rank = -(-total // world)
    padded = rows.new_zeros((per_rank, *rows.shape[1:]))
    padded[: len(rows)] = rows
    gathered = trainer.strategy.all_gather(padded.to(trainer.strategy.root_device))  # [world, per_rank, ...]
    return gathered.reshape(world * per_rank, *rows.shape[1:])[:total]


def sharded_map(trainer: L.Trainer, items: Sequence[Any], compute: Callable[[Sequence[Any]], Tensor]) -> Tensor:
    """``compute(items)`` split across ranks and gathered in order (on CPU): every item exactly once."""
    mine = shard(trainer, items)
    # A rank with an empty shard still computes one row, for the shape and dtype of the gather.
    result = compute(mine if mine else items[:1])[: len(mine)]
    return gather_rows(trainer, result, len(items)).cpu()


def log_dir(trainer: L.Trainer) -> Path:
    """The run's log directory. Call it on every rank: ``trainer.log_dir`` is a broadcast under DDP."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def log_scalars(trainer: L.Trainer, metrics: dict[str, float], step: int) -> None:
    """To every logger (rank 0) and to ``callback_metrics`` (so ModelCheckpoint can monitor them)."""
    for name, value in metrics.items():
        trainer.callback_metrics[name] = torch.tensor(value)
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)


def save_figure(trainer: L.Trainer, directory: Path, tag: str, figure: Any, step: int) -> None:
    """To TensorBoard, and as a PNG under ``<log_dir>/figures/`` (rank 0)."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        add_figure = getattr(getattr(logger, "experiment", None), "add_figure", None)
        if add_figure is not None:
            add_figure(tag, figure, global_step=step, close=False)
    path = directory / "figures" / f"{tag.replace('/', '_')}_step{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def progress_bar(trainer: L.Trainer, description: str, enabled: bool) -> Callable | None:
    # Off with the callback's own switch, or with the trainer's (--trainer.enable_progress_bar false).
    if not enabled or not trainer.is_global_zero or trainer.progress_bar_callback is None:
        return None
    from tqdm.auto import tqdm

    return lambda iterable: tqdm(iterable, desc=description, leave=False, dynamic_ncols=True)


@contextmanager
def evaluating(model: torch.nn.Module, trainer: L.Trainer | None = None) -> Iterator[None]:
    """Eval mode (no dropout) for the block, then every submodule's own mode back as it was; the
    forward passes run under the trainer's precision, as its training and validation steps do
    (bf16-mixed: autocast, which also lets float32 trained weights meet bfloat16 frozen ones).

    Under FSDP2 the parameters are gathered once for the block: each rank then evaluates its own
    share of the examples with no collective inside the forward passes (ranks may run different
    numbers of batches).
    """
    modes = {module: module.training for module in model.modules()}
    sharded = _fsdp_modules(model)
    model.eval()
    for module in sharded:
        module.unshard()
        module.set_reshard_after_forward(False)
    precision = trainer.precision_plugin.forward_context() if trainer is not None else nullcontext()
    try:
        with precision:
            yield
    finally:
        for module in sharded:
            module.set_reshard_after_forward(True)
            module.reshard()
        for module, mode in modes.items():
            module.training = mode


def _fsdp_modules(model: torch.nn.Module) -> list[Any]:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch built without distributed support
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


# The process's CUDA peak before the latest reset by `measured`, so the run's overall peak survives the resets.
_peak_before_resets = 0


def peak_before_resets() -> int:
    return _peak_before_resets


@contextmanager
def measured(device: torch.device) -> Iterator[dict[str, Any]]:
    """Wall time and peak memory of the block, into the yielded dict (``wall_s``, ``peak_memory_bytes``).

    On CUDA the peak is ``max_memory_allocated`` from a reset at the block's start; on a CPU it is None (the
    process's peak resident set size cannot be reset, so it would not be the block's own).
    """
    global _peak_before_resets
    cuda = device.type == "cuda"
    if cuda:
        _peak_before_resets = max(_peak_before_resets, torch.cuda.max_memory_allocated(device))
        torch.cuda.reset_peak_memory_stats(device)
    cost: dict[str, Any] = {}
    start = time.perf_counter()
    yield cost
    cost["wall_s"] = round(time.perf_counter() - start, 3)
    cost["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device)) if cuda else None
