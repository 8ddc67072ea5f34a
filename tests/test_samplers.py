"""Tests of pysv.data.samplers: batch composition, determinism, epoch coverage, distributed split."""
import collections
import warnings

import numpy as np
import pytest
import torch

from pysv.data import samplers as S


def make_labels(counts, prefix="spk"):
    """Per-utterance speaker names; counts[i] utterances of speaker i, speakers interleaved."""
    labels = []
    remaining = list(counts)
    while any(remaining):
        for i, r in enumerate(remaining):
            if r:
                labels.append(f"{prefix}{i:03d}")
                remaining[i] -= 1
    return labels


def spk_counts(batch, labels):
    return collections.Counter(labels[i] for i in batch)


def all_batches(kind, labels, batch_size, world, epoch=0, **kw):
    out = []
    for rank in range(world):
        smp = S.build_sampler(kind, labels, batch_size, num_replicas=world, rank=rank, **kw)
        smp.set_epoch(epoch)
        out.append(list(smp))
        assert len(smp) == len(out[-1])
    return out


# ---------------------------------------------------------------------------------------------
# composition
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [2, 3])
def test_balanced_composition(m):
    rng = np.random.default_rng(0)
    labels = make_labels(rng.integers(m, 15, size=40).tolist())
    smp = S.BalancedBatchSampler(labels, batch_size=6 * m, utts_per_spk=m, num_replicas=1, rank=0)
    batches = list(smp)
    assert len(batches) == len(smp) > 0
    for b in batches:
        assert len(b) == 6 * m
        c = spk_counts(b, labels)
        assert len(c) == 6 and set(c.values()) == {m}  # 6 distinct speakers, exactly m each
        assert len(set(b)) == len(b)  # no utterance twice in a batch


def test_balanced_single_rank_uses_each_utterance_at_most_once_without_padding():
    labels = make_labels([4] * 12)  # 24 groups of 2 -> 6 batches of 4 speakers, nothing to pad
    batches = list(S.BalancedBatchSampler(labels, 8, 2, num_replicas=1, rank=0))
    flat = [i for b in batches for i in b]
    assert len(batches) == 6 and sorted(flat) == list(range(len(labels)))


def test_mp_random_composition_and_expected_size():
    labels = make_labels([12] * 400)
    smp = S.MPRandomBatchSampler(labels, batch_size=800, num_replicas=1, rank=0)
    assert smp.spks_per_batch == 320  # MP-2021 footnote 1: expected 800 -> 320 speakers
    small = S.MPRandomBatchSampler(labels, batch_size=50, num_replicas=1, rank=0)
    assert small.spks_per_batch == 20
    sizes, per_spk = [], collections.Counter()
    for epoch in range(3):
        small.set_epoch(epoch)
        for b in small:
            c = spk_counts(b, labels)
            assert len(c) == 20 and set(c.values()) <= {2, 3}
            per_spk.update(c.values())
            sizes.append(len(b))
    assert 45 <= np.mean(sizes) <= 52  # expected 50 (slightly fewer 3s: a group of 3 may not fit)
    assert per_spk[2] > 0 and per_spk[3] > 0


def test_shuffle_covers_every_utterance_once():
    labels = make_labels([5, 1, 7, 3])
    smp = S.ShuffleBatchSampler(labels, 4, num_replicas=1, rank=0)
    batches = list(smp)
    assert [len(b) for b in batches] == [4, 4, 4, 4]
    assert sorted(i for b in batches for i in b) == list(range(16))
    smp_drop = S.ShuffleBatchSampler(labels, 5, drop_last=True, num_replicas=1, rank=0)
    assert len(smp_drop) == 3 and all(len(b) == 5 for b in smp_drop)
    assert len(S.ShuffleBatchSampler(labels, 5, num_replicas=1, rank=0)) == 4


# ---------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,kw", [("balanced", {"utts_per_spk": 2}), ("mp_random", {}), ("shuffle", {})])
def test_deterministic_given_seed_and_epoch(kind, kw):
    labels = make_labels([7, 9, 4, 11, 6, 8, 5, 10])
    a = S.build_sampler(kind, labels, 6, seed=3, num_replicas=1, rank=0, **kw)
    b = S.build_sampler(kind, labels, 6, seed=3, num_replicas=1, rank=0, **kw)
    for epoch in (0, 1, 5):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert list(a) == list(b)
        assert list(a) == list(a)  # iterating twice gives the same epoch
    a.set_epoch(0)
    e0 = list(a)
    a.set_epoch(1)
    assert list(a) != e0
    c = S.build_sampler(kind, labels, 6, seed=4, num_replicas=1, rank=0, **kw)
    assert list(c) != e0


# ---------------------------------------------------------------------------------------------
# coverage, caps, short speakers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,kw", [("balanced", {"utts_per_spk": 2}), ("mp_random", {}), ("shuffle", {})])
def test_every_speaker_every_epoch(kind, kw):
    rng = np.random.default_rng(1)
    counts = rng.integers(2, 30, size=37).tolist()
    counts[5] = 1  # a speaker with fewer utterances than M: sampled with replacement by default
    labels = make_labels(counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(3):
            seen = {labels[i] for rank_batches in all_batches(kind, labels, 8 if kind != "mp_random" else 10,
                                                              3, epoch, **kw)
                    for b in rank_batches for i in b}
            assert seen == set(labels)


@pytest.mark.parametrize("kind", ["balanced", "mp_random"])
def test_short_speakers_policy(kind):
    labels = make_labels([6] * 10 + [1])
    with pytest.warns(UserWarning, match="spk010"):
        smp = S.build_sampler(kind, labels, 6, num_replicas=1, rank=0)
    batches = list(smp)
    short = [b for b in batches if "spk010" in spk_counts(b, labels)]
    assert len(short) >= 1
    for b in short:  # filled by replacement: M copies of its single utterance
        assert spk_counts(b, labels)["spk010"] >= 2
    with pytest.warns(UserWarning, match="spk010"):
        smp = S.build_sampler(kind, labels, 6, short_speakers="skip", num_replicas=1, rank=0)
    assert all("spk010" not in spk_counts(b, labels) for b in smp)


@pytest.mark.parametrize("kind,kw", [("balanced", {"utts_per_spk": 2}), ("mp_random", {}), ("shuffle", {})])
def test_max_utts_per_spk(kind, kw):
    labels = make_labels([40, 3, 5, 4, 6, 30, 3, 4])
    smp = S.build_sampler(kind, labels, 6, max_utts_per_spk=4, num_replicas=1, rank=0, **kw)
    subsets = []
    for epoch in range(2):
        smp.set_epoch(epoch)
        distinct = collections.defaultdict(set)
        for b in smp:
            for i in b:
                distinct[labels[i]].add(i)
        assert max(len(v) for v in distinct.values()) <= 4
        assert set(distinct) == set(labels)
        subsets.append(distinct["spk000"])
    assert subsets[0] != subsets[1]  # a fresh subset of the big speaker each epoch


# ---------------------------------------------------------------------------------------------
# distributed split
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,kw", [("balanced", {"utts_per_spk": 2}), ("mp_random", {}), ("shuffle", {})])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_equal_lengths_across_ranks(kind, kw, world):
    rng = np.random.default_rng(world)
    labels = make_labels(rng.integers(2, 20, size=23).tolist())
    for epoch in range(3):
        per_rank = all_batches(kind, labels, 6, world, epoch, **kw)
        assert len({len(r) for r in per_rank}) == 1
        if kind != "shuffle":
            for r in per_rank:
                for b in r:
                    c = spk_counts(b, labels)
                    assert max(c.values()) <= 3 and len(c) == (3 if kind == "balanced" else 2)


@pytest.mark.parametrize("kind,kw", [("balanced", {"utts_per_spk": 2}), ("mp_random", {"utts_choices": (2,)}),
                                     ("shuffle", {})])
def test_disjoint_ranks(kind, kw):
    labels = make_labels([4] * 16)  # 32 groups of 2 -> 8 batches of 4 speakers, nothing padded
    per_rank = all_batches(kind, labels, 8, 4, epoch=2, **kw)
    sets = [{i for b in r for i in b} for r in per_rank]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not sets[a] & sets[b]
    assert set().union(*sets) == set(range(len(labels)))


def test_padding_keeps_speakers_distinct_with_a_dominant_speaker():
    labels = make_labels([60, 3, 2, 4, 2, 3, 5])
    per_rank = all_batches("balanced", labels, 6, 2, utts_per_spk=2)
    assert len(per_rank[0]) == len(per_rank[1])
    for r in per_rank:
        for b in r:
            c = spk_counts(b, labels)
            assert len(c) == 3 and set(c.values()) == {2}


def test_defaults_follow_torch_distributed(monkeypatch):
    labels = make_labels([4] * 16)
    assert S.build_sampler("balanced", labels, 8).num_replicas == 1
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 4)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: 2)
    smp = S.build_sampler("balanced", labels, 8)
    assert (smp.num_replicas, smp.rank) == (4, 2)
    explicit = S.build_sampler("balanced", labels, 8, num_replicas=4, rank=2)
    assert list(smp) == list(explicit) and len(smp) == 2


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_arguments():
    labels = make_labels([4] * 5)
    with pytest.raises(TypeError, match="'bogus'"):
        S.build_sampler("balanced", labels, 4, bogus=1)
    with pytest.raises(ValueError, match="unknown sampler kind"):
        S.build_sampler("nope", labels, 4)
    with pytest.raises(ValueError, match="multiple"):
        S.BalancedBatchSampler(labels, 5, utts_per_spk=2)
    with pytest.raises(ValueError, match="distinct speakers"):
        S.BalancedBatchSampler(labels, 12, utts_per_spk=2)  # 6 speakers per batch, 5 exist
    with pytest.raises(ValueError, match="rank"):
        S.BalancedBatchSampler(labels, 4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="max_utts_per_spk"):
        S.MPRandomBatchSampler(labels, 4, max_utts_per_spk=2)
    with pytest.raises(ValueError, match="empty"):
        S.ShuffleBatchSampler([], 4)


def test_dataloader_integration():
    labels = make_labels([3] * 6)
    ds = torch.utils.data.TensorDataset(torch.arange(len(labels)))
    smp = S.build_sampler("balanced", labels, 6, utts_per_spk=3, num_replicas=1, rank=0)
    dl = torch.utils.data.DataLoader(ds, batch_sampler=smp)
    got = [b[0].tolist() for b in dl]
    assert len(got) == len(smp) == 3
    assert sorted(i for b in got for i in b) == list(range(18))
