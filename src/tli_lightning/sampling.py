"""Contrastive batches in which no two pairs share a word (a shared word would be a false negative)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch.utils.data import BatchSampler, DataLoader, Sampler

from tli_lightning.lexicon import Pair


def plan_batches(pairs: Sequence[Pair], indices: Sequence[int], batch_size: int) -> list[list[int]]:
    """Greedily pack ``indices`` (in order) into batches with no repeated source or target word.

    Each index goes to the oldest open batch it does not conflict with; a batch is closed when
    full. Leftover open batches are kept if they hold at least two pairs (one pair has no
    negative); a pair that conflicts with everything opens a new batch, so no pair is lost
    unless it ends up alone.
    """
    done: list[list[int]] = []
    open_batches: list[tuple[list[int], set[str], set[str]]] = []
    for index in indices:
        source, target = pairs[index]
        for batch, sources, targets in open_batches:
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


class ConflictFreeBatchSampler(BatchSampler):
    """Batches of up to ``batch_size`` pairs, reshuffled each epoch, deterministic given ``seed``.

    ``sampler`` decides which indices this process sees (all of them on one device; under DDP
    Lightning substitutes a sharding sampler, keeping the other arguments). Its ``epoch``
    attribute, set by Lightning through ``set_epoch``, seeds each epoch's shuffle.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool = False,
        *,
        pairs: Sequence[Pair],
        seed: int = 0,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.pairs = pairs
        self.seed = seed
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches already trained)
        self._cache: tuple[Any, list[list[int]]] | None = None

    @property
    def epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def batches(self) -> list[list[int]]:
        """This epoch's whole plan (cached per epoch)."""
        if self._cache is None or self._cache[0] != self.epoch:
            order = list(self.sampler)
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
            plan = plan_batches(self.pairs, order, self.batch_size)
            if self.drop_last:
                plan = [b for b in plan if len(b) == self.batch_size]
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
        yield from self.batches()[skip:]

    def __len__(self) -> int:
        return len(self.batches())  # the whole epoch, also when resuming inside it


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ConflictFreeBatchSampler` that Lightning checkpoints.

    Lightning stores ``state_dict()`` in every checkpoint and hands it back on resume, so a run
    restarted from a mid-epoch checkpoint (e.g. ``on_exception.ckpt``) continues with the next
    batch it had not trained on, instead of replaying the epoch from its start.
    ``batches_done`` reports how many batches of the current epoch have been trained.
    """

    def __init__(self, *args: Any, batches_done: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        done = self.batches_done() if self.batches_done is not None else 0
        return {"epoch": self.batch_sampler.epoch, "batches_done": done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.batch_sampler.resume_at(state_dict["epoch"], state_dict["batches_done"])
