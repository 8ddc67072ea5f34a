"""Shared fixtures: a tiny prepared mini corpus with fbank40 features (built once per session)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory):
    """Stage 0 + 1 on a tiny mini corpus: 10 speakers (7 train, 3 test) x 5 utterances of 2-3 s.

    Returns a dict with ``root`` (a directory laid out like the recipe: data/...), ``train`` and
    ``test`` data dirs and their fbank40 feature dirs.
    """
    from pysv.bin import make_features
    from pysv.data.corpora.mini import prepare_mini
    from pysv.data.corpora.mini_synth import MiniConfig

    root = tmp_path_factory.mktemp("recipe")
    data = root / "data"
    cfg = MiniConfig(num_speakers=10, utts_per_speaker=5, min_duration=2.0, max_duration=3.0, seed=11)
    prepare_mini(data_root=str(data), num_test_speakers=3, mini_cfg=cfg, name="tiny")
    out = {"root": root, "train": data / "tiny_train", "test": data / "tiny_test"}
    for key in ("train", "test"):
        fdir = data / f"tiny_{key}_fbank40"
        rc = make_features.main(["--data", str(out[key]), "--feat-config", "fbank40", "--out", str(fdir)])
        assert rc in (0, None)
        out[f"{key}_feats"] = fdir
    return out


@pytest.fixture
def in_dir(monkeypatch):
    """Run a test with the working directory set (the recipe's relative paths)."""
    def _chdir(path):
        monkeypatch.chdir(path)
        return Path(path)
    return _chdir


@pytest.fixture(scope="session")
def bench_script():
    """Load ``bench/<name>.py`` as a module (the bench scripts are not a package)."""
    def _load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    return _load
