"""``LMEvalTasks``: lm-evaluation-harness's own ``simple_evaluate`` on the live model, as one more measurement.

For the tasks this package does not reimplement (AfriXNLI, AfriMMLU, Belebele, AfriMGSM: tasks that need the
hub or generation), lm-eval itself scores the model being trained, before training and after each epoch. It
is an optional extra (``pip install -e ".[lm-eval]"``): nothing imports lm-eval until this callback measures.

lm-eval runs on global rank 0 only (with a model object it sets rank 0 / world size 1 itself); the other
ranks wait at a barrier and receive rank 0's results, so every rank keeps the same state. The training's
random state is left as it was (lm-eval seeds python, numpy and torch for its own reproducibility).

Example, with lm-eval installed (a task of the hub, or a local one through ``include_path``)::

    from tli_lightning.callbacks.lm_eval_bridge import LMEvalTasks
    trainer = L.Trainer(callbacks=[LMEvalTasks(["afrixnli_en_direct_swa"], limit=200)])

Logs ``<key>/<task>/<metric>`` (``acc``, ``acc_norm``, ``f1``, ... as lm-eval names them; a filter other than
lm-eval's ``none`` is appended, ``exact_match_flexible-extract``) and writes lm-eval's results per evaluation
to ``<log_dir>/<key>/<name>.json``.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning as L
import torch

from tli_lightning.callbacks._common import Getter, default_model, default_tokenizer, evaluating
from tli_lightning.callbacks.measurement import Measurement
from tli_lightning.errors import TLIError


def lm_eval_available() -> bool:
    """Whether lm-eval (with its Hugging Face backend) can be imported."""
    try:
        import lm_eval  # noqa: F401
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _random_state_kept() -> Iterator[None]:
    """Python's, numpy's and torch's (CPU and CUDA) random states as they were before the block."""
    python = random.getstate()
    try:
        import numpy

        numpy_state = numpy.random.get_state()
    except ImportError:  # numpy is optional to torch
        numpy, numpy_state = None, None
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python)
            if numpy is not None:
                numpy.random.set_state(numpy_state)


def metric_name(name: str) -> str:
    """lm-eval's ``"<metric>,<filter>"`` result key as a scalar name: the filter ``none`` dropped, another one
    appended (``"exact_match,flexible-extract"`` -> ``exact_match_flexible-extract``)."""
    metric, _, filter_name = name.partition(",")
    if metric.endswith("_stderr") and filter_name not in ("", "none"):
        return f"{metric[: -len('_stderr')]}_{filter_name}_stderr"
    return metric if filter_name in ("", "none") else f"{metric}_{filter_name}"


class LMEvalTasks(Measurement):
    """lm-eval tasks on the live model, before training and after every ``every_n_epochs`` epochs.

    Args:
        tasks: lm-eval task (or group) names, e.g. ``["belebele_swh_Latn", "afrimmlu_direct_swa"]``.
        include_path: A folder of extra task YAMLs (lm-eval's ``--include_path``), e.g. local data through
            ``dataset_path: json``.
        limit: lm-eval's ``limit``: at most this many documents per task (an int), or a fraction (a float < 1).
        num_fewshot: lm-eval's ``num_fewshot`` (default: each task's own, usually 0).
        batch_size: lm-eval's batch size (requests per forward pass).
        bootstrap_iters: lm-eval's ``bootstrap_iters``; 0 (the default) computes no standard errors, since
            lm-eval's bootstrap forks a process pool, unwelcome inside a training process.
        evaluate_kwargs: Further keyword arguments of ``lm_eval.simple_evaluate`` (e.g. ``{"apply_chat_template":
            True}``).
        every_n_epochs: Evaluate after every n-th epoch.
        key: The results' folder and scalars' prefix (several instances coexist).
    """

    kind = "lm_eval"

    def __init__(
        self,
        tasks: Sequence[str],
        include_path: str | None = None,
        limit: int | float | None = None,
        num_fewshot: int | None = None,
        batch_size: int = 8,
        bootstrap_iters: int = 0,
        evaluate_kwargs: Mapping[str, Any] | None = None,
        every_n_epochs: int = 1,
        get_model: Getter = default_model,
        get_tokenizer: Getter = default_tokenizer,
        key: str = "lm_eval",
    ) -> None:
        if isinstance(tasks, str) or not tasks or not all(isinstance(t, str) and t for t in tasks):
            raise TLIError(f"LMEvalTasks: tasks must be a non-empty list of lm-eval task names, got {tasks!r}")
        if batch_size < 1:
            raise TLIError(f"LMEvalTasks: batch_size must be >= 1, got {batch_size}")
        super().__init__(key, every_n_epochs)
        self.tasks = list(tasks)
        self.include_path = include_path
        self.limit = limit
        self.num_fewshot = num_fewshot
        self.batch_size = batch_size
        self.bootstrap_iters = bootstrap_iters
        self.evaluate_kwargs = dict(evaluate_kwargs or {})
        self.get_model = get_model
        self.get_tokenizer = get_tokenizer

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not lm_eval_available():  # refused before training, not after the first epoch
            raise TLIError('LMEvalTasks needs lm-evaluation-harness: pip install -e ".[lm-eval]"')

    def _simple_evaluate(self, model: torch.nn.Module, tokenizer: Any) -> dict[str, Any]:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        from tli_lightning.backbones import base_model

        if getattr(self, "_manager", None) is None:  # indexing every task file takes seconds: once per callback
            self._manager = TaskManager(include_path=self.include_path) if self.include_path else TaskManager()
        manager = self._manager
        unknown = [t for t in self.tasks if t not in manager.all_tasks]
        if unknown:
            raise TLIError(
                f"LMEvalTasks: lm-eval knows no task {', '.join(map(repr, unknown))}"
                + (f" (also looked in include_path {self.include_path})" if self.include_path else "")
            )
        # The causal LM itself (LoRA layers, injected into it by PEFT, included): HFLM wants a PreTrainedModel.
        # A copy of the tokenizer: HFLM may set its pad token.
        lm = HFLM(pretrained=base_model(model), tokenizer=copy.deepcopy(tokenizer), batch_size=self.batch_size)
        with _random_state_kept():
            output = lm_eval.simple_evaluate(
                model=lm,
                tasks=self.tasks,
                num_fewshot=self.num_fewshot,
                limit=self.limit,
                bootstrap_iters=self.bootstrap_iters,
                task_manager=manager,
                log_samples=False,
                **self.evaluate_kwargs,
            )
        results = {}
        for task, values in output["results"].items():
            # Keys are "<metric>,<filter>"; "alias" and an uncomputed standard error ("N/A") are not numbers.
            results[task] = {
                metric_name(name): float(value)
                for name, value in values.items()
                if "," in name and isinstance(value, (int, float)) and not isinstance(value, bool)
            }
        samples = {
            task: int(n.get("effective", n.get("original", 0))) for task, n in output.get("n-samples", {}).items()
        }
        return {"tasks": results, "n": samples, "versions": output.get("versions", {})}

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """``{"tasks": {task: {metric: value}}, "n": {task: documents}, "versions": {task: version}}``."""
        model, tokenizer = self.get_model(pl_module), self.get_tokenizer(pl_module)
        report = None
        # Every rank enters evaluating(): under FSDP its gathering of the parameters is a collective.
        with evaluating(model, trainer):
            if trainer.is_global_zero:
                report = self._simple_evaluate(model, tokenizer)
            trainer.strategy.barrier("lm_eval")
        return trainer.strategy.broadcast(report, src=0)

    def scalars(self, report: dict[str, Any]) -> dict[str, float]:
        return {
            f"{self.key}/{task}/{metric}": value
            for task, metrics in report["tasks"].items()
            for metric, value in metrics.items()
            if not metric.endswith("_stderr")
        }
