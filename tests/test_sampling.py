import pytest
from torch.utils.data import DistributedSampler

from tli_lightning.data import PairDataset
from tli_lightning.sampling import ConflictFreeBatchSampler, batches_per_epoch, plan_batches


def _pairs():
    # Several words recur on both sides: a naive batcher would put them together.
    return [(f"s{i % 37}", f"t{i % 23}") for i in range(120)]


def _sampler(pairs, seed=0, batch_size=8, shuffle=True, num_replicas=1, rank=0):
    carrier = DistributedSampler(PairDataset(pairs), num_replicas=1, rank=0, shuffle=False)
    return ConflictFreeBatchSampler(
        carrier, batch_size, pairs=pairs, seed=seed, shuffle=shuffle, num_replicas=num_replicas, rank=rank
    )


def test_no_batch_shares_a_word_and_each_epoch_has_the_same_length():
    pairs = _pairs()
    sampler = _sampler(pairs)
    lengths = set()
    for epoch in range(5):
        sampler.sampler.set_epoch(epoch)
        batches = list(sampler)
        lengths.add(len(batches))
        for batch in batches:
            assert 2 <= len(batch) <= 8
            assert len({pairs[i][0] for i in batch}) == len(batch)
            assert len({pairs[i][1] for i in batch}) == len(batch)
        seen = [i for b in batches for i in b]
        assert len(seen) == len(set(seen))
        assert len(seen) >= len(pairs) - 8  # what is left over waits for the next epoch
    assert lengths == {120 // 8}  # Lightning counts an epoch's batches once; the LR schedule relies on it


def test_deterministic_per_seed_and_reshuffled_per_epoch():
    pairs = _pairs()
    first = list(_sampler(pairs, seed=1))
    assert list(_sampler(pairs, seed=1)) == first
    assert list(_sampler(pairs, seed=2)) != first
    sampler = _sampler(pairs, seed=1)
    sampler.sampler.set_epoch(1)
    assert list(sampler) != first
    assert len(sampler) == len(list(sampler))


@pytest.mark.parametrize("world", [2, 3])
def test_one_global_plan_dealt_in_equal_shares(world):
    pairs = _pairs()
    single = _sampler(pairs, seed=3)
    shares = [list(_sampler(pairs, seed=3, num_replicas=world, rank=r)) for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # every process runs the same number of optimizer steps
    assert len(shares[0]) == batches_per_epoch(120, 8, world)
    # Round-robin from the one plan: step i of rank r is batch i * world + r of the single-process plan.
    plan = single.global_plan()
    for step in range(len(shares[0])):
        for rank in range(world):
            assert shares[rank][step] == plan[step * world + rank]
    # Reshuffled every epoch, the shards change too: hard negatives come from the whole set.
    again = _sampler(pairs, seed=3, num_replicas=world, rank=0)
    again.sampler.set_epoch(1)
    assert list(again) != shares[0]


def test_validation_batches_are_fixed_across_epochs():
    pairs = _pairs()
    sampler = _sampler(pairs, shuffle=False)
    first = list(sampler)
    sampler.sampler.set_epoch(3)
    assert list(sampler) == first
    assert sorted(i for b in first for i in b) == list(range(120))  # every control pair, in order of the file


def test_resume_inside_an_epoch_skips_what_was_trained():
    pairs = _pairs()
    sampler = _sampler(pairs, seed=5)
    sampler.sampler.set_epoch(2)
    whole = list(sampler)
    sampler.resume_at(2, 4)
    assert list(sampler) == whole[4:]
    assert list(sampler) == whole  # only once


def test_plan_batches_closes_full_batches_in_order():
    pairs = [("a", "x"), ("b", "y"), ("a", "z"), ("c", "w")]
    assert plan_batches(pairs, [0, 1, 2, 3], 2) == [[0, 1], [2, 3]]


def test_a_checkpoint_resumed_by_another_number_of_processes_is_refused():
    import pytest

    from tli_lightning.errors import TLIError
    from tli_lightning.sampling import ResumableDataLoader

    pairs = _pairs()
    loader = ResumableDataLoader(PairDataset(pairs), batch_sampler=_sampler(pairs, num_replicas=1))
    with pytest.raises(TLIError, match=r"trained by 2 processes and is resumed by 1: .*--trainer.devices 2"):
        loader.load_state_dict({"epoch": 0, "batches_done": 3, "processes": 2})
