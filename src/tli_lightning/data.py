"""``TLIDataModule``: contrastive lexicon batches for training, control pairs for validation,
and XNLI splits for zero-shot evaluation.

Example, in any Lightning project::

    from tli_lightning.data import TLIDataModule
    dm = TLIDataModule(lexicon_path="lexicon_sw_en.tsv", control_path=None, control_fraction=0.1,
                       xnli_source="../shared/data/xnli_{lang}_validation.jsonl")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))  # {"source": [...8 words], "target": [...8 words]}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
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
from tli_lightning.textfiles import read_text
from tli_lightning.tiny_model import demo_data_path
from tli_lightning.xnli import XNLIExample, candidate_templates, load_xnli, stratified_indices

log = logging.getLogger(__name__)
DEMO = "demo"


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
    """The data: conflict-free Swahili-English lexicon batches, held-out control pairs, XNLI examples."""

    def __init__(
        self,
        lexicon_path: str = DEMO,
        source_column: str = "sw",
        target_column: str = "en",
        control_path: str | None = DEMO,
        control_fraction: float = 0.1,
        leakage: LeakagePolicy = "error",
        batch_size: int = 8,
        xnli_languages: list[str] = ["sw", "en"],  # noqa: B006 (jsonargparse shows list defaults)
        xnli_source: str = DEMO,
        xnli_split: str = "validation",
        xnli_limit: int | None = None,
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
            xnli_languages: XNLI languages to evaluate zero-shot (lm-eval's 15 are known).
            xnli_source: ``facebook/xnli`` (hub, through ``datasets``), a local path pattern with
                ``{lang}`` (JSONL or TSV with premise/hypothesis/label), or ``demo`` (bundled 60
                examples per language).
            xnli_split: Hub split to evaluate; lm-eval scores ``validation``.
            xnli_limit: Evaluate a seeded, label-stratified subsample of this many examples
                (the same rows in every language); null = all.
            seed: Seed of the control split (when ``control_path`` is null) and the XNLI subsample (when
                ``xnli_limit`` is set): what is measured. An integer keeps them fixed across replicate runs,
                so seeds vary only the training (batch order, LoRA initialisation and dropout); null = the
                run's ``seed_everything``, so replicate seeds also vary the control split and the XNLI
                sample and their spread includes that sampling noise. summary.json records the seed used
                (``data.seed_resolved``) and what a seed varied (``seed_varies``).
        """
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 2:
            raise TLIError(f"batch_size must be at least 2 (in-batch negatives), got {batch_size}")
        if xnli_limit is not None and xnli_limit < 1:
            raise TLIError(f"xnli_limit must be at least 1 (or null for every example), got {xnli_limit}")
        if not xnli_languages:
            raise TLIError("xnli_languages must name at least one language, e.g. [sw, en]")
        for language in xnli_languages:
            candidate_templates(language)  # lm-eval's verbalizers must exist: refused now, not after loading a model
        if lexicon_path != DEMO and not Path(lexicon_path).is_file():  # a mistyped path before any rule about it
            read_text(lexicon_path, "lexicon file")
        if control_path == DEMO and lexicon_path != DEMO:
            # The user's own file first: its errors are theirs to fix, and would hide behind this refusal.
            self._lexicon(lexicon_path, "lexicon_trained.tsv")
            check_control_choice(lexicon_path, control_path)
        self.train_pairs: list[Pair] = []
        self.control_pairs: list[Pair] = []
        self.xnli: dict[str, list[XNLIExample]] = {}
        self.xnli_subsampled = False

    def data_seed(self) -> int:
        """The seed of the control split and the XNLI subsample: ``seed``, or the run's when it is null."""
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
        return varies + (["XNLI sample"] if self.xnli_subsampled else [])

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
        self.xnli = self._xnli()

    def _xnli(self) -> dict[str, list[XNLIExample]]:
        hp = self.hparams
        source = str(demo_data_path("xnli_{lang}.jsonl")) if hp.xnli_source == DEMO else hp.xnli_source
        splits = {}
        for language in hp.xnli_languages:
            examples = load_xnli(source, language, hp.xnli_split)
            keep = stratified_indices([e.label for e in examples], hp.xnli_limit, self.data_seed())
            splits[language] = [examples[i] for i in keep]
            self.xnli_subsampled |= len(keep) < len(examples)
        return splits

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
        """Hashes of what is measured (trained pairs, control pairs, XNLI rows per language): runs whose
        fingerprints differ are not comparable."""

        def digest(value) -> str:
            return hashlib.sha256(json.dumps(value, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]

        return {
            "trained_pairs": digest(sorted(self.train_pairs)),
            "control_pairs": digest(sorted(self.control_pairs)),
            **{
                f"xnli_{lang}": digest([[e.premise, e.hypothesis, e.label] for e in rows])
                for lang, rows in self.xnli.items()
            },
        }
