"""VoxCeleb1 / VoxCeleb2 from local directories (never downloads).

Training: VoxCeleb2-dev (``--vox2-dir``: ``dev/aac/idXXXXX/<video>/<nnnnn>.m4a`` converted to
``.wav``, or a ``wav/`` / ``dev/wav/`` tree of the same shape) and/or VoxCeleb1-dev (the VoxCeleb1
speakers outside id10270-id10309). Testing: the VoxCeleb1 utterances named by the cleaned trial lists
Vox1-O (``veri_test2.txt``), Vox1-E (``list_test_all2.txt``), Vox1-H (``list_test_hard2.txt``),
converted to ``data/<test-set>/trials_{O,E,H}`` (and ``trials`` = the first of them).

Vox1-E and Vox1-H are drawn from all 1,251 VoxCeleb1 speakers, so VoxCeleb1-dev cannot be in the
training set when testing on them (lhotse's own recipe trains on VoxCeleb1-dev and uses the uncleaned
list; that combination is refused here), and more generally no training speaker may appear in a trial.

Utterance ids: ``idXXXXX-<video>-<nnnnn>`` (speaker id ``idXXXXX`` first).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Sequence, Tuple

from pysv.data.prepare import (AudioOptions, SetSpec, Utterance, raise_errors, run_sets, scan_speaker_tree,
                               sets_complete)
from pysv.data.trials import Trial
from pysv.utils.io import DataError, read_trials

logger = logging.getLogger(__name__)

VOX1_TEST_SPEAKERS = frozenset(f"id{n}" for n in range(10270, 10310))  # the 40 Vox1-O speakers
TRIAL_FILES = {"O": "veri_test2.txt", "E": "list_test_all2.txt", "H": "list_test_hard2.txt"}
UNCLEANED_FILES = {"veri_test.txt", "list_test_all.txt", "list_test_hard.txt"}
TRAIN_CORPORA = ("vox2_dev", "vox1_dev")
_SPK_RE = re.compile(r"^id\d+$")


def vox_utt_id(rel: str, culprit: str) -> Tuple[str, str]:
    """``id10270/x6uYqmx31kE/00001.wav`` (or the id form) -> (``id10270-x6uYqmx31kE-00001``, speaker)."""
    if "/" in rel:
        parts = PurePosixPath(rel).with_suffix("").parts
        if len(parts) != 3 or not _SPK_RE.match(parts[0]):
            raise DataError(f"{culprit}: cannot parse VoxCeleb utterance {rel!r}; expected "
                            "'idXXXXX/<video>/<nnnnn>.wav'")
        return "-".join(parts), parts[0]
    parts = rel.split("-")
    if len(parts) < 3 or not _SPK_RE.match(parts[0]):
        raise DataError(f"{culprit}: cannot parse VoxCeleb utterance {rel!r}; expected "
                        "'idXXXXX/<video>/<nnnnn>.wav' or 'idXXXXX-<video>-<nnnnn>'")
    return rel, parts[0]


def _utt_relpath(utt_id: str) -> str:
    parts = utt_id.split("-")
    return f"{parts[0]}/{'-'.join(parts[1:-1])}/{parts[-1]}"


def _has_speaker_dirs(d: Path) -> bool:
    try:
        return any(_SPK_RE.match(e.name) and e.is_dir() for e in os.scandir(d))
    except OSError:
        return False


def find_audio_root(d, kind: str) -> Path:
    """The directory holding ``idXXXXX/`` speaker folders inside a VoxCeleb download directory."""
    d = Path(d)
    if not d.is_dir():
        raise DataError(f"{kind} directory not found: {d}")
    cands = ([d / "wav", d] if kind == "VoxCeleb1" else
             [d / "dev" / "wav", d / "wav", d / "dev" / "aac", d / "aac", d])
    for c in cands:
        if c.is_dir() and _has_speaker_dirs(c):
            return c
    raise DataError(f"{kind} directory {d}: no idXXXXX/ speaker folders found in any of "
                    f"{', '.join(str(c) for c in cands)}")


def _tree_utt_id(spk: str, rel: PurePosixPath) -> Optional[str]:
    """``<video>/<nnnnn>.wav`` in the folder of ``spk`` -> ``spk-<video>-<nnnnn>`` (other depths: not ours)."""
    return f"{spk}-{rel.parts[0]}-{rel.stem}" if len(rel.parts) == 2 else None


def scan_vox_tree(root: Path, what: str, exclude: frozenset = frozenset(), progress: bool = True) -> List[Utterance]:
    """Utterances under ``root/idXXXXX/<video>/<nnnnn>.{wav,flac}`` (m4a without a wav twin refused)."""
    speakers = sorted(e.name for e in os.scandir(root) if e.is_dir() and _SPK_RE.match(e.name))
    return scan_speaker_tree(root, [s for s in speakers if s not in exclude], _tree_utt_id, what,
                             "idXXXXX/<video>/<nnnnn>.wav", progress)


def read_vox_trials(path, roots: Sequence[Path]) -> Tuple[List[Trial], Dict[str, Utterance]]:
    """Trials as utterance ids and the utterances they name (files looked up in ``roots``)."""
    raw = read_trials(path)
    if not raw:
        raise DataError(f"trial list {path} is empty")
    trials: List[Trial] = []
    utts: Dict[str, Utterance] = {}
    missing: List[str] = []
    for a, b, lab in raw:
        ids = []
        for x in (a, b):
            utt, spk = vox_utt_id(x, str(path))
            ids.append(utt)
            if utt in utts:
                continue
            rel = x if "/" in x else _utt_relpath(utt) + ".wav"
            found = None
            for r in roots:
                for cand in (r / rel, (r / rel).with_suffix(".flac")):
                    if cand.is_file():
                        found = cand
                        break
                if found:
                    break
            if found is None:
                missing.append(f"{path}: names {rel}, which is missing under {', '.join(map(str, roots))}")
                utts[utt] = Utterance(utt, spk, "")
            else:
                utts[utt] = Utterance(utt, spk, os.path.abspath(found))
        trials.append((ids[0], ids[1], lab))
    raise_errors(missing, f"trial list {path}")
    return trials, utts


def prepare_voxceleb(data_root="data", vox1_dirs: Sequence[str] = (), vox2_dir: Optional[str] = None,
                     train_corpora: Optional[Sequence[str]] = None, trial_lists: Optional[Dict[str, str]] = None,
                     trials_dir: Optional[str] = None, train_set_name: Optional[str] = None,
                     test_set_name: str = "vox1_test", audio_opts: Optional[AudioOptions] = None,
                     force: bool = False) -> List[Path]:
    """Prepare the VoxCeleb training set and the Vox1 test set. Returns the set dirs."""
    audio_opts = audio_opts or AudioOptions(check_audio=False)
    audio_opts.validate()
    vox1_dirs = [str(d) for d in (vox1_dirs or []) if d]  # empty entries (unset shell variables) ignored
    lists: Dict[str, str] = {}
    if trials_dir:
        td = Path(trials_dir)
        if not td.is_dir():
            raise DataError(f"trials directory not found: {td}")
        for k, fname in TRIAL_FILES.items():
            if (td / fname).is_file():
                lists[k] = str(td / fname)
        if not lists:
            raise DataError(f"trials directory {td} has none of {', '.join(TRIAL_FILES.values())}")
    for k, v in (trial_lists or {}).items():
        if v:
            if k not in TRIAL_FILES:
                raise DataError(f"unknown trial list {k!r}; expected one of O, E, H")
            if not Path(v).is_file():
                raise DataError(f"missing Vox1-{k} trial list: {v}")
            lists[k] = str(v)
    for k, v in lists.items():
        if Path(v).name in UNCLEANED_FILES:
            logger.warning("Vox1-%s list %s looks like the original (uncleaned) list; the cleaned lists "
                           "(%s) are the standard ones", k, v, TRIAL_FILES[k])
    if train_corpora is None:  # auto
        if vox2_dir:
            train_corpora = ["vox2_dev"]
        elif vox1_dirs and not ({"E", "H"} & set(lists)):
            train_corpora = ["vox1_dev"]
        else:
            train_corpora = []
    train_corpora = [c for c in train_corpora if c and c != "none"]
    for c in train_corpora:
        if c not in TRAIN_CORPORA:
            raise DataError(f"unknown training corpus {c!r}; expected vox2_dev and/or vox1_dev (or none)")
    if "vox1_dev" in train_corpora and ({"E", "H"} & set(lists)):
        raise DataError(
            "refusing to train on VoxCeleb1-dev while testing on Vox1-"
            f"{'/'.join(sorted({'E', 'H'} & set(lists)))}: those trial lists are drawn from all 1,251 "
            "VoxCeleb1 speakers, including the 1,211 VoxCeleb1-dev speakers, so test speakers would be "
            "training speakers. Train on VoxCeleb2-dev only (--train-corpora vox2_dev) or test on Vox1-O "
            "only (lhotse's voxceleb recipe makes this mistake; pysv does not).")
    if "vox2_dev" in train_corpora and not vox2_dir:
        raise DataError("--train-corpora includes vox2_dev but --vox2-dir was not given")
    if ("vox1_dev" in train_corpora or lists) and not vox1_dirs:
        raise DataError("VoxCeleb1 is needed (vox1_dev training or Vox1 trials) but --vox1-dir was not given")
    if not train_corpora and not lists:
        raise DataError("nothing to prepare: give --vox2-dir / --train-corpora for training and/or Vox1 "
                        "trial lists (--trials-dir, --vox1-o, --vox1-e, --vox1-h) for testing")
    if not train_set_name and train_corpora:
        train_set_name = train_corpora[0] if len(train_corpora) == 1 else "vox12_dev"
    set_names = ([train_set_name] if train_corpora else []) + ([test_set_name] if lists else [])
    fp = dict(stage="voxceleb", vox1_dirs=[os.path.abspath(d) for d in vox1_dirs],
              vox2_dir=os.path.abspath(vox2_dir) if vox2_dir else None,
              train_corpora=list(train_corpora), lists={k: os.path.abspath(v) for k, v in lists.items()},
              sets=set_names, audio=audio_opts.fingerprint())
    if not force and sets_complete(data_root, set_names, fp):
        return [Path(data_root) / s for s in set_names]

    vox1_roots = [find_audio_root(d, "VoxCeleb1") for d in vox1_dirs]
    specs: List[SetSpec] = []
    train_utts: List[Utterance] = []
    if "vox2_dev" in train_corpora:
        train_utts += scan_vox_tree(find_audio_root(vox2_dir, "VoxCeleb2"), "VoxCeleb2-dev",
                                    progress=audio_opts.progress)
    if "vox1_dev" in train_corpora:
        for r in vox1_roots:
            train_utts += scan_vox_tree(r, "VoxCeleb1-dev", exclude=VOX1_TEST_SPEAKERS, progress=audio_opts.progress)
    test_trials: Dict[str, List[Trial]] = {}
    test_utts: Dict[str, Utterance] = {}
    for k in ("O", "E", "H"):
        if k in lists:
            trials, utts = read_vox_trials(lists[k], vox1_roots)
            test_trials[f"trials_{k}"] = trials
            test_utts.update(utts)
    if train_utts and test_utts:
        overlap = sorted({u.speaker for u in train_utts} & {u.speaker for u in test_utts.values()})
        if overlap:
            raise DataError(f"{len(overlap)} training speaker(s) appear in the trial lists (e.g. "
                            f"{', '.join(overlap[:5])}); training and test speakers must be disjoint")
    if train_corpora:
        specs.append(SetSpec(train_set_name, "voxceleb", sorted(train_utts, key=lambda u: u.utt_id)))
    if lists:
        first = next(k for k in ("O", "E", "H") if k in lists)
        test_trials["trials"] = test_trials[f"trials_{first}"]
        specs.append(SetSpec(test_set_name, "voxceleb", sorted(test_utts.values(), key=lambda u: u.utt_id),
                             test_trials))
    return run_sets(specs, Path(data_root), audio_opts, fp)
