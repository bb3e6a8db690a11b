"""``TLIDataModule``: contrastive lexicon batches for training, control pairs for validation,
the zero-shot reasoning tasks' examples and held-out text for evaluation.

Example, in any Lightning project::

    from tli_lightning.data import ReasoningTask, TLIDataModule
    dm = TLIDataModule(lexicon_path="lexicon_sw_en.tsv", control_path=None, control_fraction=0.1,
                       reasoning_tasks=[ReasoningTask("xnli_sw", "../shared/data/xnli_sw_validation.jsonl"),
                                        ReasoningTask("xcopa_sw", "../shared/data/xcopa_sw_validation.jsonl")])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))  # {"source": [...8 words], "target": [...8 words]}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tli_lightning.errors import TLIError
from tli_lightning.lexicon import (
    LeakagePolicy,
    Pair,
    check_control_choice,
    read_lexicon,
    resolve_leakage,
    split_control,
)
from tli_lightning.sampling import ConflictFreeBatchSampler, ResumableDataLoader, batches_per_epoch
from tli_lightning.tasks import Example, get_task, load_examples
from tli_lightning.textfiles import read_text
from tli_lightning.tiny_model import demo_data_path
from tli_lightning.xnli import load_xnli, stratified_indices

log = logging.getLogger(__name__)
DEMO = "demo"


@dataclass(frozen=True)
class ReasoningTask:
    """One zero-shot task to measure each epoch.

    Args:
        task: lm-eval's task name: ``xnli_<lang>`` (its 15 languages), ``xcopa_<lang>``, ``xstorycloze_<lang>``
            (11 languages each; sw among them).
        path: A local file in the task's format, the hub id lm-eval reads (through ``datasets``), or ``demo`` (a
            few bundled hand-written examples).
        limit: Measure a seeded, label-stratified subsample of this many examples (null: ``reasoning_limit``).
    """

    task: str
    path: str = DEMO
    limit: int | None = None


# The demo measures every task the package defines in Swahili, and XNLI in English.
DEMO_TASKS = [ReasoningTask(name) for name in ("xnli_sw", "xnli_en", "xcopa_sw", "xstorycloze_sw")]


class PairDataset(Dataset):
    def __init__(self, pairs: Sequence[Pair]) -> None:
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Pair:
        return self.pairs[index]


def collate_pairs(pairs: Sequence[Pair]) -> dict[str, list[str]]:
    # Strings, not token ids: the model owns the tokenizer and the word template.
    return {"source": [s for s, _ in pairs], "target": [t for _, t in pairs]}


class TLIDataModule(L.LightningDataModule):
    """The data: conflict-free Swahili-English lexicon batches, held-out control pairs, the zero-shot tasks'
    examples, held-out text."""

    def __init__(
        self,
        lexicon_path: str = DEMO,
        source_column: str = "sw",
        target_column: str = "en",
        control_path: str | None = DEMO,
        control_fraction: float = 0.1,
        leakage: LeakagePolicy = "error",
        batch_size: int = 8,
        reasoning_tasks: list[ReasoningTask] | None = None,
        reasoning_limit: int | None = None,
        lm_texts: dict[str, str] | None = None,
        seed: int | None = 42,
    ) -> None:
        """
        Args:
            lexicon_path: Trained pairs: a TSV with a header naming ``source_column`` and
                ``target_column``, or the TLI paper's JSON list of {"swahili", "english"}.
                ``demo`` = the bundled hand-written Swahili-English lexicon (330 pairs).
            source_column: Column (or JSON key) of the source-language word.
            target_column: Column (or JSON key) of the target-language word.
            control_path: Held-out control pairs (never trained), same formats. ``demo`` = the
                bundled control set (for the bundled lexicon only); null = split
                ``control_fraction`` of the lexicon off, grouped so no word is shared.
            control_fraction: Share of pairs held out as control when ``control_path`` is null.
            leakage: What to do with trained pairs sharing a word (either side) with the control
                set: ``error`` (refuse) or ``drop`` (remove them from the trained set).
            batch_size: Pairs per contrastive batch (per process); no batch holds two pairs sharing a word.
                Each epoch has ``pairs // batch_size`` batches, cut to a multiple of the number of
                processes and dealt to them in turn; the pairs left over (a few, different each epoch)
                wait for the next epoch. Validation and test batches are fixed across epochs.
            reasoning_tasks: The zero-shot tasks measured before training and after every epoch, each
                ``{task: <lm-eval task name>, path: <file, hub id or demo>, limit: <n or null>}``; task names:
                ``xnli_<lang>`` (lm-eval's 15 XNLI languages), ``xcopa_<lang>``, ``xstorycloze_<lang>`` (11
                each; demo examples for the sw tasks and xnli_en). null = the
                bundled demo examples of xnli_sw, xnli_en, xcopa_sw and xstorycloze_sw.
            reasoning_limit: The subsample size of every task without its own ``limit`` (seeded,
                label-stratified: parallel XNLI files keep the same rows in every language); null = all.
            lm_texts: Held-out text per language for the language-modelling retention measurement,
                ``{language: text file, one text per line}``; null = the premises of the measured XNLI
                examples of each language.
            seed: Seed of the control split (when ``control_path`` is null) and the task subsamples (when a
                limit is set): what is measured. An integer keeps them fixed across replicate runs,
                so seeds vary only the training (batch order, LoRA initialisation and dropout); null = the
                run's ``seed_everything``, so replicate seeds also vary the control split and the task
                samples and their spread includes that sampling noise. summary.json records the seed used
                (``data.seed_resolved``) and what a seed varied (``seed_varies``).
        """
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 2:
            raise TLIError(f"batch_size must be at least 2 (in-batch negatives), got {batch_size}")
        specs = DEMO_TASKS if reasoning_tasks is None else reasoning_tasks
        self.reasoning_tasks = [_task_spec(spec, index) for index, spec in enumerate(specs)]
        if not self.reasoning_tasks:
            raise TLIError("data.reasoning_tasks is empty: name at least one task, or null for the demo tasks")
        names = [spec.task for spec in self.reasoning_tasks]
        if len(set(names)) < len(names):
            raise TLIError(f"data.reasoning_tasks names a task twice: {names}")
        for limit in [reasoning_limit] + [spec.limit for spec in self.reasoning_tasks]:
            if limit is not None and limit < 1:
                raise TLIError(f"a reasoning task's limit must be at least 1 (or null for every example), got {limit}")
        if lexicon_path != DEMO and not Path(lexicon_path).is_file():  # a mistyped path before any rule about it
            read_text(lexicon_path, "lexicon file")
        if control_path == DEMO and lexicon_path != DEMO:
            # The user's own file first: its errors are theirs to fix, and would hide behind this refusal.
            self._lexicon(lexicon_path, "lexicon_trained.tsv")
            check_control_choice(lexicon_path, control_path)
        self.train_pairs: list[Pair] = []
        self.control_pairs: list[Pair] = []
        self.reasoning: dict[str, list[Example]] = {}
        self.lm_texts: dict[str, list[str]] = {}
        self.subsampled = False

    def data_seed(self) -> int:
        """The seed of the control split and the task subsamples: ``seed``, or the run's when it is null."""
        if self.hparams.seed is not None:
            return self.hparams.seed
        # seed_everything sets PL_GLOBAL_SEED in every process (DDP ranks inherit it), so all agree.
        global_seed = os.environ.get("PL_GLOBAL_SEED")
        if global_seed is None:
            raise TLIError(
                "data.seed null follows the run's seed, but none was set: call lightning.seed_everything(n) "
                "first (the CLI does, with --seed_everything), or give data.seed an integer"
            )
        return int(global_seed)

    def seed_varies(self) -> list[str]:
        """What the run's seed changes in the data (after ``setup``): empty when ``seed`` is an integer."""
        if self.hparams.seed is not None:
            return []
        varies = ["control split"] if self.hparams.control_path is None else []
        return varies + (["task samples"] if self.subsampled else [])

    def _lexicon(self, path: str, demo_name: str) -> list[Pair]:
        hp = self.hparams
        lexicon = read_lexicon(demo_data_path(demo_name) if path == DEMO else path, hp.source_column, hp.target_column)
        if lexicon.duplicates_dropped:
            log.info("%s: dropped %d exact duplicate pairs", lexicon.path, lexicon.duplicates_dropped)
        return lexicon.pairs

    def setup(self, stage: str | None = None) -> None:
        if self.train_pairs:
            return
        hp = self.hparams
        pairs = self._lexicon(hp.lexicon_path, "lexicon_trained.tsv")
        if hp.control_path is None:
            pairs, control = split_control(pairs, hp.control_fraction, self.data_seed())
        else:
            control = self._lexicon(hp.control_path, "lexicon_control.tsv")
        self.train_pairs, dropped = resolve_leakage(pairs, control, hp.leakage)
        if dropped:
            log.warning("dropped %d trained pairs sharing a word with the control set", dropped)
        self.control_pairs = control
        if len(self.train_pairs) < 2 or len(self.control_pairs) < 2:
            raise TLIError(
                f"need at least 2 trained and 2 control pairs, got {len(self.train_pairs)} and {len(control)}"
            )
        self.reasoning, kept = self._reasoning()
        self.lm_texts = self._lm_texts(kept)

    def _reasoning(self) -> tuple[dict[str, list[Example]], dict[str, list[int]]]:
        """Each task's measured examples, and which rows of its file they are (indices, for the XNLI premises)."""
        tasks, kept = {}, {}
        for spec in self.reasoning_tasks:
            examples = load_examples(spec.task, spec.path)
            limit = spec.limit if spec.limit is not None else self.hparams.reasoning_limit
            keep = stratified_indices([e.label for e in examples], limit, self.data_seed())
            tasks[spec.task] = [examples[i] for i in keep]
            kept[spec.task] = keep
            self.subsampled |= len(keep) < len(examples)
        return tasks, kept

    def _lm_texts(self, kept: dict[str, list[int]]) -> dict[str, list[str]]:
        """Held-out text per language: the given files, else the measured XNLI examples' premises."""
        if self.hparams.lm_texts is not None:
            return {language: read_text_lines(path) for language, path in self.hparams.lm_texts.items()}
        texts = {}
        for spec in self.reasoning_tasks:
            task = get_task(spec.task)
            if task.benchmark == "xnli" and task.language not in texts:
                source = str(demo_data_path(task.demo_file)) if spec.path == DEMO else spec.path
                premises = [e.premise for e in load_xnli(source, task.language)]
                texts[task.language] = [premises[i] for i in kept[spec.task]]
        return texts

    def _train_batches_done(self) -> int:
        # Batches of the current epoch whose optimizer step ran. Right after an epoch ended the
        # counter still holds that epoch's total; the sampler's epoch check sorts that out.
        loop = self.trainer.fit_loop.epoch_loop
        return 0 if loop.batch_progress.is_last_batch else loop.batch_progress.current.processed

    def _pair_loader(self, pairs: Sequence[Pair], shuffle: bool) -> DataLoader:
        dataset = PairDataset(pairs)
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        if shuffle and batches_per_epoch(len(pairs), self.hparams.batch_size, world) < 1:
            raise TLIError(
                f"{len(pairs)} trained pairs make no batch of {self.hparams.batch_size} for each of {world} processes; "
                "lower --data.batch_size or use fewer processes"
            )
        # A one-replica DistributedSampler carries the epoch (Lightning calls its set_epoch). Under DDP
        # Lightning substitutes a sharding one; either way only its epoch is used: the batch sampler
        # deals one global plan itself.
        epoch_carrier = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=False)
        # Training order follows the global seed (replicate runs differ); what is measured follows data.seed.
        seed = torch.initial_seed() % 2**31 if shuffle else self.data_seed()
        batches = ConflictFreeBatchSampler(
            epoch_carrier,
            self.hparams.batch_size,
            pairs=dataset.pairs,
            seed=seed,
            shuffle=shuffle,
            num_replicas=world,
            rank=rank,
        )
        # A private generator: creating an iterator then draws from it, not from torch's global
        # RNG, so evaluation and resuming do not shift the LoRA-dropout random stream.
        kwargs = dict(
            batch_sampler=batches, collate_fn=collate_pairs, generator=torch.Generator().manual_seed(self.data_seed())
        )
        if shuffle and not batches.global_plan():
            raise TLIError("no two trained pairs can share a batch (every pair shares a word with every other)")
        if shuffle and self.trainer is not None:
            return ResumableDataLoader(dataset, batches_done=self._train_batches_done, **kwargs)
        return DataLoader(dataset, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._pair_loader(self.train_pairs, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._pair_loader(self.control_pairs, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._pair_loader(self.control_pairs, shuffle=False)

    def fingerprint(self) -> dict[str, str]:
        """Hashes of what is measured (trained pairs, control pairs, each task's examples, the held-out texts):
        runs whose fingerprints differ are not comparable."""

        def digest(value) -> str:
            return hashlib.sha256(json.dumps(value, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]

        return {
            "trained_pairs": digest(sorted(self.train_pairs)),
            "control_pairs": digest(sorted(self.control_pairs)),
            **{
                task: digest([[e.context, list(e.choices), e.label] for e in rows])
                for task, rows in self.reasoning.items()
            },
            **{f"lm_texts_{language}": digest(texts) for language, texts in self.lm_texts.items()},
        }


def _task_spec(spec: ReasoningTask | dict, index: int) -> ReasoningTask:
    """A task of ``data.reasoning_tasks``, its name checked now (not after a model has loaded)."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"task", "path", "limit"})
        if unknown or "task" not in spec:
            raise TLIError(
                f"data.reasoning_tasks[{index}]: expected {{task, path, limit}}, got {spec!r}"
                + (f" (unknown keys {unknown})" if unknown else "")
            )
        spec = ReasoningTask(**spec)
    get_task(spec.task)
    return spec


def read_text_lines(path: str) -> list[str]:
    """One text per non-empty line of a UTF-8 file."""
    lines = [line.strip() for line in read_text(path, "held-out text file").split("\n")]
    texts = [line for line in lines if line]
    if not texts:
        raise TLIError(f"{path}: no text found (one text per line)")
    return texts
