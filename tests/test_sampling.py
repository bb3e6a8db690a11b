from torch.utils.data import DistributedSampler

from tli_lightning.data import PairDataset
from tli_lightning.sampling import ConflictFreeBatchSampler, plan_batches


def _pairs():
    # Several words recur on both sides: a naive batcher would put them together.
    return [(f"s{i % 37}", f"t{i % 23}") for i in range(120)]


def _sampler(pairs, seed=0, batch_size=8):
    dataset = PairDataset(pairs)
    carrier = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=False)
    return ConflictFreeBatchSampler(carrier, batch_size, pairs=pairs, seed=seed)


def test_no_batch_shares_a_word_and_no_pair_is_lost():
    pairs = _pairs()
    batches = list(_sampler(pairs))
    for batch in batches:
        assert 2 <= len(batch) <= 8
        assert len({pairs[i][0] for i in batch}) == len(batch)
        assert len({pairs[i][1] for i in batch}) == len(batch)
    seen = sorted(i for b in batches for i in b)
    assert len(seen) == len(set(seen))
    assert len(seen) >= len(pairs) - 1  # at most one pair can be left alone


def test_deterministic_per_seed_and_reshuffled_per_epoch():
    pairs = _pairs()
    first = list(_sampler(pairs, seed=1))
    assert list(_sampler(pairs, seed=1)) == first
    assert list(_sampler(pairs, seed=2)) != first
    sampler = _sampler(pairs, seed=1)
    sampler.sampler.set_epoch(1)
    assert list(sampler) != first
    assert len(sampler) == len(list(sampler))


def test_plan_batches_closes_full_batches_in_order():
    pairs = [("a", "x"), ("b", "y"), ("a", "z"), ("c", "w")]
    assert plan_batches(pairs, [0, 1, 2, 3], 2) == [[0, 1], [2, 3]]
