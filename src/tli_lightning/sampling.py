"""Contrastive batches in which no two pairs share a word (a shared word would be a false negative).

One plan per epoch covers the whole pair set and is dealt to the processes, so every process
runs the same number of optimizer steps (DDP's gradient all-reduce needs that) with the same
learning-rate schedule, and hard negatives are drawn from the whole set, not from a fixed shard.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch.utils.data import BatchSampler, DataLoader, Sampler

from tli_lightning.errors import TLIError
from tli_lightning.lexicon import Pair


def plan_batches(pairs: Sequence[Pair], indices: Sequence[int], batch_size: int) -> list[list[int]]:
    """Greedily pack ``indices`` (in order) into batches with no repeated source or target word.

    Each index goes to the oldest open batch it does not conflict with; a batch is closed when
    full. Leftover open batches are kept (at the end) if they hold at least two pairs (one pair has
    no negative); a pair that conflicts with everything opens a new batch, so no pair is lost unless
    it ends up alone.
    """
    done: list[list[int]] = []
    open_batches: list[tuple[list[int], set[str], set[str]]] = []
    for index in indices:
        source, target = pairs[index]
        for batch, sources, targets in open_batches:  # noqa: B007 (the batch found is used after the loop)
            if source not in sources and target not in targets:
                break
        else:
            batch, sources, targets = [], set(), set()
            open_batches.append((batch, sources, targets))
        batch.append(index)
        sources.add(source)
        targets.add(target)
        if len(batch) == batch_size:
            done.append(batch)
            open_batches = [b for b in open_batches if b[0] is not batch]
    done.extend(batch for batch, _, _ in open_batches if len(batch) >= 2)
    return done


def batches_per_epoch(num_pairs: int, batch_size: int, num_replicas: int) -> int:
    """Training batches per process and epoch: the same every epoch, whatever the shuffle.

    ``num_pairs // batch_size`` batches in all, cut down to a multiple of the number of processes.
    What the greedy plan has beyond them (its last, partly filled batches: a few pairs, different ones
    each epoch) waits for the next epoch. A lexicon so full of shared words that the plan has fewer
    batches repeats its first ones (Lightning counts an epoch's batches once, and the learning-rate
    schedule and resuming rely on that count).
    """
    return num_pairs // batch_size // num_replicas


class ConflictFreeBatchSampler(BatchSampler):
    """Conflict-free batches from one global plan per epoch, dealt round-robin to the processes.

    Args:
        sampler: Carries the epoch (Lightning calls its ``set_epoch``); its order is not used. Under
            DDP Lightning may substitute a sharding sampler; the plan stays global either way.
        batch_size: Pairs per batch.
        drop_last: Keep only full batches.
        pairs: The ``(source, target)`` pairs the indices refer to.
        seed: Seed of the shuffle (reshuffled each epoch with ``seed`` and the epoch).
        shuffle: Reshuffle each epoch and use :func:`batches_per_epoch` batches (training); or one
            fixed plan, every batch of it (validation, test).
        num_replicas: Number of processes sharing the plan.
        rank: This process's index.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool = False,
        *,
        pairs: Sequence[Pair],
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.pairs = pairs
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches already trained)
        self._cache: tuple[int, list[list[int]]] | None = None

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0)) if self.shuffle else 0

    def global_plan(self) -> list[list[int]]:
        """This epoch's batches for every process, in dealing order (cached per epoch)."""
        if self._cache is None or self._cache[0] != self.epoch:
            order = list(range(len(self.pairs)))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
            plan = plan_batches(self.pairs, order, self.batch_size)
            if self.drop_last:
                plan = [b for b in plan if len(b) == self.batch_size]
            if self.shuffle:
                wanted = batches_per_epoch(len(self.pairs), self.batch_size, self.num_replicas) * self.num_replicas
                plan = (plan * -(-wanted // len(plan)))[:wanted] if plan else []
            else:  # validation: every batch, cut so each process gets the same count (DDP's forward may sync)
                plan = plan[: len(plan) // self.num_replicas * self.num_replicas]
            self._cache = (self.epoch, plan)
        return self._cache[1]

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Skip the first ``batches_done`` batches of ``epoch`` (once): a mid-epoch resume."""
        self._resume_at = (epoch, batches_done)

    def __iter__(self) -> Iterator[list[int]]:
        skip = 0
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            skip = self._resume_at[1]
        self._resume_at = None
        yield from self.global_plan()[self.rank :: self.num_replicas][skip:]

    def __len__(self) -> int:
        return len(self.global_plan()) // self.num_replicas  # the whole epoch, also when resuming inside it


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ConflictFreeBatchSampler` that Lightning checkpoints.

    Lightning stores ``state_dict()`` in every checkpoint and hands it back on resume, so a run
    restarted from a mid-epoch checkpoint continues with the next batch it had not trained on,
    instead of replaying the epoch from its start. ``batches_done`` reports how many batches of the
    current epoch this process has trained.
    """

    def __init__(self, *args: Any, batches_done: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        done = self.batches_done() if self.batches_done is not None else 0
        return {"epoch": self.batch_sampler.epoch, "batches_done": done, "processes": self.batch_sampler.num_replicas}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        saved = state_dict.get("processes", self.batch_sampler.num_replicas)
        if saved != self.batch_sampler.num_replicas:
            # Each process counted its own batches: another number of processes deals another plan.
            raise TLIError(
                f"this checkpoint was trained by {saved} processes and is resumed by "
                f"{self.batch_sampler.num_replicas}: resume with the same number (--trainer.devices {saved})"
            )
        self.batch_sampler.resume_at(state_dict["epoch"], state_dict["batches_done"])
