"""Batch samplers for speaker-embedding training.

All samplers are ``torch.utils.data.Sampler`` objects that yield *lists of dataset indices* (pass
them as ``DataLoader(dataset, batch_sampler=...)``). They are built from the per-utterance speaker
labels of the dataset (``labels[i]`` = speaker of item ``i``; any hashable: ids or names).

* :class:`BalancedBatchSampler` (kind ``balanced``): every batch holds exactly ``utts_per_spk``
  (M) utterances of each of ``batch_size / M`` distinct speakers (prototypical, angular
  prototypical, GE2E, triplet, MP-Balance / MMP-Balance of MP-2021 / MP-2020).
* :class:`MPRandomBatchSampler` (kind ``mp_random``): every batch holds ``K`` distinct speakers;
  each speaker gets M drawn at random from ``utts_choices`` (default {2, 3}) and ``K =
  round(batch_size / mean(utts_choices))`` so the *expected* batch size is ``batch_size``
  (MP-2021 footnote 1: expected 800 -> 320 speakers).
* :class:`ShuffleBatchSampler` (kind ``shuffle``): plain shuffling (classification and proxy losses).

Common behaviour:

* Deterministic given ``seed`` and the epoch set with :meth:`set_epoch` (same on every rank).
* ``batch_size`` is the batch of *one* process; under ``torch.distributed`` the global batch is
  ``batch_size * num_replicas``. ``num_replicas`` / ``rank`` default to the initialised process
  group (1 / 0 without one). The epoch's batches are planned once, globally, then dealt out
  round-robin (``batches[rank::num_replicas]``): ranks get disjoint batches and *the same number of
  batches* (the plan is padded to a multiple of ``num_replicas``), so DDP never waits on a rank
  that ran out of data. ``len(sampler)`` is the number of batches this rank yields this epoch.
* Every speaker appears in every epoch (summed over ranks). ``max_utts_per_spk`` caps how many
  distinct utterances of a speaker are used in an epoch (a fresh random subset each epoch;
  padding, below, may repeat some of them but never adds others).
* Speaker-group samplers (balanced, mp_random): each speaker's utterances (after the cap) are
  shuffled and cut into groups of M; a remainder smaller than M waits for the next epoch (a
  different remainder each epoch). Groups are spread over the epoch (stratified random keys) and
  packed greedily into batches with no speaker twice. The batch left incomplete at the end, and the
  extra batches that make the count a multiple of ``num_replicas``, are filled with groups of
  speakers drawn at random (not already in that batch), taking utterances not yet used this epoch
  (a remainder) first -- these padding groups are the only place where an utterance can be seen
  twice in an epoch or where two ranks can share an utterance.
* Speakers with fewer utterances than M (``short_speakers``): ``"replace"`` (default) keeps them --
  their single group is completed by sampling their utterances *with replacement* (with random
  cropping the repeated utterance still yields different segments); ``"skip"`` leaves them out.
  Either way a ``UserWarning`` names them once, when the sampler is built.
"""
from __future__ import annotations

import warnings
from typing import Dict, Hashable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from pysv.utils.registry import Registry

SHORT_SPEAKER_POLICIES = ("replace", "skip")
SAMPLERS = Registry("sampler kind", __name__, skip=("labels", "batch_size"))


def _dist_world(num_replicas: Optional[int], rank: Optional[int]) -> Tuple[int, int]:
    """``(num_replicas, rank)``; ``None`` means "ask torch.distributed" (1 / 0 without a group)."""
    if num_replicas is None or rank is None:
        initialised = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialised else 1
        if rank is None:
            rank = dist.get_rank() if initialised else 0
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be an int in [0, {num_replicas}), got {rank!r}")
    return num_replicas, rank


def _names(values: Sequence, limit: int = 20) -> str:
    values = list(values)
    text = ", ".join(str(v) for v in values[:limit])
    if len(values) > limit:
        text += f", ... ({len(values)} in all)"
    return text


class _SpeakerBatchSampler(Sampler):
    """Shared plumbing: speaker index, seed/epoch, distributed split, per-epoch plan cache."""

    def __init__(
        self,
        labels: Sequence[Hashable],
        batch_size: int,
        seed: int = 0,
        max_utts_per_spk: Optional[int] = None,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ):
        super().__init__()
        labels = list(labels)
        if not labels:
            raise ValueError("sampler: empty label list")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"sampler: batch_size must be a positive int, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"sampler: seed must be a non-negative int, got {seed!r}")
        if max_utts_per_spk is not None and (
            isinstance(max_utts_per_spk, bool) or not isinstance(max_utts_per_spk, int) or max_utts_per_spk < 1
        ):
            raise ValueError(f"sampler: max_utts_per_spk must be a positive int or None, got {max_utts_per_spk!r}")
        self.num_replicas, self.rank = _dist_world(num_replicas, rank)
        self.batch_size = batch_size
        self.seed = seed
        self.max_utts_per_spk = max_utts_per_spk
        self.epoch = 0
        try:
            names = sorted(set(labels))
        except TypeError:  # mixed, unorderable label types
            names = sorted(set(labels), key=lambda v: (type(v).__name__, str(v)))
        self.speakers: List[Hashable] = names
        spk_id: Dict[Hashable, int] = {name: i for i, name in enumerate(names)}
        ids = np.fromiter((spk_id[v] for v in labels), dtype=np.int64, count=len(labels))
        order = np.argsort(ids, kind="stable")
        bounds = np.searchsorted(ids[order], np.arange(len(names) + 1))
        #: utterance (dataset) indices of every speaker, in dataset order
        self.spk_utts: List[np.ndarray] = [order[bounds[s] : bounds[s + 1]] for s in range(len(names))]
        self.num_utts = len(labels)
        self._cache: Optional[Tuple[int, object]] = None

    # ------------------------------------------------------------------ epoch / rng
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (deterministic) plan ``__iter__`` and ``__len__`` use."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"sampler: epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))

    def _plan(self):
        if self._cache is None or self._cache[0] != self.epoch:
            self._cache = (self.epoch, self._build_plan(self.epoch))
        return self._cache[1]

    def _build_plan(self, epoch: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _capped(self, utts: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """Shuffle a speaker's utterances; split into (used this epoch, left out by the cap)."""
        perm = rng.permutation(utts)
        if self.max_utts_per_spk is None:
            return perm, perm[:0]
        return perm[: self.max_utts_per_spk], perm[self.max_utts_per_spk :]


class _GroupBatchSampler(_SpeakerBatchSampler):
    """Batches of ``spks_per_batch`` distinct speakers, each with a group of M utterances,
    M drawn uniformly from ``utts_choices`` for every group."""

    def __init__(
        self,
        labels: Sequence[Hashable],
        batch_size: int,
        spks_per_batch: int,
        utts_choices: Sequence[int],
        seed: int = 0,
        max_utts_per_spk: Optional[int] = None,
        short_speakers: str = "replace",
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ):
        super().__init__(labels, batch_size, seed, max_utts_per_spk, num_replicas, rank)
        choices = tuple(sorted({int(c) for c in utts_choices}))
        if not choices or choices[0] < 1:
            raise ValueError(f"sampler: utterances per speaker must be positive ints, got {tuple(utts_choices)}")
        if short_speakers not in SHORT_SPEAKER_POLICIES:
            raise ValueError(f"sampler: short_speakers must be one of {SHORT_SPEAKER_POLICIES}, got {short_speakers!r}")
        if max_utts_per_spk is not None and max_utts_per_spk < choices[-1]:
            raise ValueError(
                f"sampler: max_utts_per_spk={max_utts_per_spk} is smaller than the {choices[-1]} utterances "
                "per speaker a batch may need"
            )
        self.utts_choices = choices
        self.spks_per_batch = int(spks_per_batch)
        self.short_speakers = short_speakers
        short = [s for s, u in enumerate(self.spk_utts) if len(u) < choices[0]]
        if short_speakers == "skip":
            short_set = set(short)
            self.eligible = [s for s in range(len(self.speakers)) if s not in short_set]
        else:
            self.eligible = list(range(len(self.speakers)))
        if short:
            action = (
                "skipped (short_speakers='skip')"
                if short_speakers == "skip"
                else "sampled with replacement to fill their group (short_speakers='replace')"
            )
            warnings.warn(
                f"sampler: {len(short)} speaker(s) have fewer than {choices[0]} utterances and are {action}: "
                f"{_names(self.speakers[s] for s in short)}",
                UserWarning,
                stacklevel=3,
            )
        if self.spks_per_batch < 1:
            raise ValueError("sampler: a batch needs at least one speaker")
        if self.spks_per_batch > len(self.eligible):
            raise ValueError(
                f"sampler: a batch needs {self.spks_per_batch} distinct speakers but only {len(self.eligible)} "
                f"speaker(s) can be sampled; lower batch_size"
            )

    # ------------------------------------------------------------------ planning
    def _sizes(self, n: int, rng: np.random.Generator) -> List[int]:
        """Random group sizes (from utts_choices) that fit into ``n`` utterances."""
        choices = self.utts_choices
        if len(choices) == 1:
            return [choices[0]] * (n // choices[0])
        draws = rng.choice(np.asarray(choices), size=n // choices[0] + 1)
        csum = np.cumsum(draws)
        k = int(np.searchsorted(csum, n, side="right"))
        sizes = [int(v) for v in draws[:k]]
        rest = n - (int(csum[k - 1]) if k else 0)
        if rest >= choices[0]:  # the next draw overflowed: use the largest size that still fits
            sizes.append(max(c for c in choices if c <= rest))
        return sizes

    def _draw_size(self, rng: np.random.Generator) -> int:
        return int(rng.choice(np.asarray(self.utts_choices))) if len(self.utts_choices) > 1 else self.utts_choices[0]

    def _pad_group(
        self, s: int, rng: np.random.Generator, unused: Dict[int, List[int]], allowed: Dict[int, np.ndarray]
    ) -> List[int]:
        """A padding group for speaker ``s``: utterances unused this epoch first, then repeats of
        the speaker's utterances selected for this epoch (``allowed``, i.e. within the cap)."""
        m = self._draw_size(rng)
        pool = unused[s]
        take, unused[s] = pool[:m], pool[m:]
        need = m - len(take)
        if need > 0:
            utts = allowed[s]
            others = np.setdiff1d(utts, np.asarray(take, dtype=np.int64))
            if len(others) >= need:
                extra = rng.choice(others, size=need, replace=False)
            else:  # a short speaker: with replacement
                extra = rng.choice(utts, size=need, replace=True)
            take = take + [int(v) for v in extra]
        return take

    def _pad_batch(self, batch_spks: set, groups: List[List[int]], rng, unused, allowed) -> None:
        need = self.spks_per_batch - len(groups)
        if need <= 0:
            return
        candidates = np.asarray([s for s in self.eligible if s not in batch_spks], dtype=np.int64)
        candidates = candidates[rng.permutation(len(candidates))]
        # prefer speakers that still have enough unused utterances this epoch
        starved = np.asarray([len(unused[int(s)]) < self.utts_choices[-1] for s in candidates], dtype=bool)
        candidates = candidates[np.argsort(starved, kind="stable")]
        for s in candidates[:need]:
            s = int(s)
            batch_spks.add(s)
            groups.append(self._pad_group(s, rng, unused, allowed))

    def _build_plan(self, epoch: int) -> List[List[int]]:
        rng = self._rng(epoch)
        k_spk = self.spks_per_batch
        group_spk: List[int] = []
        group_utts: List[List[int]] = []
        keys: List[np.ndarray] = []
        unused: Dict[int, List[int]] = {}
        allowed: Dict[int, np.ndarray] = {}
        for s in self.eligible:
            used, _ = self._capped(self.spk_utts[s], rng)
            allowed[s] = used
            sizes = self._sizes(len(used), rng)
            if sizes:
                bounds = np.cumsum([0] + sizes)
                groups = [used[bounds[i] : bounds[i + 1]].tolist() for i in range(len(sizes))]
                remainder = used[bounds[-1] :].tolist()
            else:  # fewer utterances than the smallest group ("replace" policy)
                m = self._draw_size(rng)
                fill = rng.choice(used, size=m - len(used), replace=True)
                groups = [used.tolist() + [int(v) for v in fill]]
                remainder = []
            g = len(groups)
            group_spk.extend([s] * g)
            group_utts.extend(groups)
            keys.append((np.arange(g) + rng.random(g)) / g)  # spread a speaker's groups over the epoch
            unused[s] = remainder  # utterances removed by the cap stay out of this epoch
        order = np.argsort(np.concatenate(keys), kind="stable")

        full: List[List[List[int]]] = []
        open_batches: List[Tuple[set, List[List[int]]]] = []
        for gi in order:
            s = group_spk[gi]
            target = None
            for j, (spks, _) in enumerate(open_batches):
                if s not in spks:
                    target = j
                    break
            if target is None:
                open_batches.append((set(), []))
                target = len(open_batches) - 1
            spks, groups = open_batches[target]
            spks.add(s)
            groups.append(group_utts[gi])
            if len(groups) == k_spk:
                full.append(groups)
                del open_batches[target]
        for spks, groups in open_batches:  # incomplete batches: fill with other speakers
            self._pad_batch(spks, groups, rng, unused, allowed)
            full.append(groups)
        while len(full) % self.num_replicas:  # equal number of batches on every rank
            spks, groups = set(), []
            self._pad_batch(spks, groups, rng, unused, allowed)
            full.append(groups)
        return [[i for grp in groups for i in grp] for groups in full]

    # ------------------------------------------------------------------ Sampler API
    def __iter__(self) -> Iterator[List[int]]:
        plan = self._plan()
        for batch in plan[self.rank :: self.num_replicas]:
            yield list(batch)

    def __len__(self) -> int:
        return len(self._plan()) // self.num_replicas


@SAMPLERS.register("balanced")
class BalancedBatchSampler(_GroupBatchSampler):
    """Exactly ``utts_per_spk`` utterances of each of ``batch_size // utts_per_spk`` distinct
    speakers per batch (``batch_size`` must be a multiple of ``utts_per_spk``)."""

    def __init__(
        self,
        labels: Sequence[Hashable],
        batch_size: int,
        utts_per_spk: int = 2,
        seed: int = 0,
        max_utts_per_spk: Optional[int] = None,
        short_speakers: str = "replace",
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ):
        if isinstance(utts_per_spk, bool) or not isinstance(utts_per_spk, int) or utts_per_spk < 1:
            raise ValueError(f"sampler: utts_per_spk must be a positive int, got {utts_per_spk!r}")
        if isinstance(batch_size, int) and batch_size % utts_per_spk:
            raise ValueError(
                f"sampler: batch_size={batch_size} is not a multiple of utts_per_spk={utts_per_spk}"
            )
        self.utts_per_spk = utts_per_spk
        super().__init__(
            labels,
            batch_size,
            spks_per_batch=batch_size // utts_per_spk if isinstance(batch_size, int) else 0,
            utts_choices=(utts_per_spk,),
            seed=seed,
            max_utts_per_spk=max_utts_per_spk,
            short_speakers=short_speakers,
            num_replicas=num_replicas,
            rank=rank,
        )


@SAMPLERS.register("mp_random")
class MPRandomBatchSampler(_GroupBatchSampler):
    """``spks_per_batch`` distinct speakers per batch, each with M utterances drawn from
    ``utts_choices`` (default {2, 3}). ``batch_size`` is the *expected* batch size: unless
    ``spks_per_batch`` is given it is ``round(batch_size / mean(utts_choices))`` (800 -> 320)."""

    def __init__(
        self,
        labels: Sequence[Hashable],
        batch_size: int,
        utts_choices: Sequence[int] = (2, 3),
        spks_per_batch: Optional[int] = None,
        seed: int = 0,
        max_utts_per_spk: Optional[int] = None,
        short_speakers: str = "replace",
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ):
        choices = tuple(utts_choices)
        if not choices:
            raise ValueError("sampler: utts_choices is empty")
        if spks_per_batch is None:
            mean = sum(int(c) for c in choices) / len(choices)
            spks_per_batch = max(1, int(round(batch_size / mean))) if isinstance(batch_size, int) else 0
        super().__init__(
            labels,
            batch_size,
            spks_per_batch=spks_per_batch,
            utts_choices=choices,
            seed=seed,
            max_utts_per_spk=max_utts_per_spk,
            short_speakers=short_speakers,
            num_replicas=num_replicas,
            rank=rank,
        )


@SAMPLERS.register("shuffle")
class ShuffleBatchSampler(_SpeakerBatchSampler):
    """Plain shuffling: a random permutation of the (capped) utterances cut into batches.

    The permutation is padded (wrapping around, like ``DistributedSampler``) to a multiple of
    ``num_replicas`` and dealt out round-robin, so ranks hold disjoint utterances (except those few
    padding repeats) and the same number of batches. ``drop_last`` drops each rank's last
    incomplete batch (then up to ``batch_size - 1`` utterances per rank are not seen that epoch).
    """

    def __init__(
        self,
        labels: Sequence[Hashable],
        batch_size: int,
        seed: int = 0,
        drop_last: bool = False,
        max_utts_per_spk: Optional[int] = None,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ):
        super().__init__(labels, batch_size, seed, max_utts_per_spk, num_replicas, rank)
        self.drop_last = bool(drop_last)
        if self.max_utts_per_spk is None:
            self.epoch_utts = self.num_utts
        else:
            self.epoch_utts = sum(min(len(u), self.max_utts_per_spk) for u in self.spk_utts)
        if self.drop_last and self._per_rank() < batch_size:
            raise ValueError(
                f"sampler: drop_last with batch_size={batch_size} leaves no batch ({self._per_rank()} "
                "utterances per rank)"
            )

    def _per_rank(self) -> int:
        return -(-self.epoch_utts // self.num_replicas)

    def _build_plan(self, epoch: int) -> np.ndarray:
        rng = self._rng(epoch)
        if self.max_utts_per_spk is None:
            idx = np.arange(self.num_utts, dtype=np.int64)
        else:
            idx = np.concatenate([self._capped(u, rng)[0] for u in self.spk_utts])
        idx = idx[rng.permutation(len(idx))]
        total = self._per_rank() * self.num_replicas
        if total > len(idx):
            idx = np.resize(idx, total)  # wrap around
        return idx

    def __iter__(self) -> Iterator[List[int]]:
        mine = self._plan()[self.rank :: self.num_replicas]
        for i in range(len(self)):
            yield mine[i * self.batch_size : (i + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        per_rank = self._per_rank()
        if self.drop_last:
            return per_rank // self.batch_size
        return -(-per_rank // self.batch_size)


def build_sampler(kind: str, labels: Sequence[Hashable], batch_size: int, **kw) -> Sampler:
    """Build a batch sampler of ``kind`` (``balanced``, ``mp_random``, ``shuffle``) over the
    per-utterance speaker ``labels``; ``kw`` are the keyword arguments of that class (unknown ones
    raise ``TypeError`` naming the key)."""
    return SAMPLERS.build(kind, labels, batch_size, **kw)


__all__ = [
    "BalancedBatchSampler",
    "MPRandomBatchSampler",
    "ShuffleBatchSampler",
    "build_sampler",
    "SAMPLERS",
    "SHORT_SPEAKER_POLICIES",
]
