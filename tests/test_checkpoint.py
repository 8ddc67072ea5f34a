"""Checkpoints load with weights_only=True: RNG states and configs in plain form, unsafe or damaged
files refused with a message naming them, the newest loadable checkpoint found on resume."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from pysv.train import checkpoint
from pysv.train.checkpoint import load_encoder
from pysv.utils.io import DataError


class _RunsCode:
    """An object whose unpickling would run a shell command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_rng_states_round_trip_through_a_safe_file(tmp_path):
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    checkpoint.save({"rng": checkpoint.rng_state()}, tmp_path / "c.pt")
    first = (torch.rand(3), np.random.rand(3), random.random(), np.random.standard_normal())
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "c.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random(), np.random.standard_normal())
    assert torch.equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2] and first[3] == again[3]


def test_config_is_stored_as_yaml_text(tmp_path):
    cfg = {"system": "x", "model": {"name": "xvector", "hparams": {"embed_dim": 8}}, "lr": 0.1, "none": None}
    checkpoint.save({"config": checkpoint.config_to_text(cfg)}, tmp_path / "c.pt")
    state = checkpoint.load(tmp_path / "c.pt")
    assert isinstance(state["config"], str)
    assert checkpoint.config_from_state(state) == cfg


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    exp = tmp_path / "exp"
    exp.mkdir()
    torch.save({"model": _RunsCode(marker), "config": "system: x\n"}, exp / "final.pt")
    with pytest.raises(checkpoint.CheckpointError, match="refusing to load.*could run code"):
        checkpoint.load(exp / "final.pt")
    with pytest.raises(DataError, match=r"final\.pt: refusing to load"):
        load_encoder(exp)
    assert not marker.exists()


def test_damaged_files_are_named_and_the_newest_loadable_one_is_used(tmp_path, caplog):
    good = tmp_path / "epoch_001.pt"
    checkpoint.save({"epoch": 1, "w": torch.ones(3)}, good)
    cut = tmp_path / "epoch_002.pt"
    checkpoint.save({"epoch": 2, "w": torch.ones(1000)}, cut)
    cut.write_bytes(cut.read_bytes()[:200])  # truncated
    with pytest.raises(checkpoint.CheckpointError, match=r"epoch_002\.pt: cannot read checkpoint"):
        checkpoint.load(cut)
    path, state = checkpoint.load_latest([good, cut])
    assert path == good and state["epoch"] == 1
    assert "falling back to epoch_001.pt" in caplog.text
    cut2 = tmp_path / "epoch_000.pt"
    cut2.write_bytes(b"")
    assert checkpoint.load_latest([cut2]) == (None, None)
    (tmp_path / "list.pt").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a pysv checkpoint"):
        checkpoint.load(tmp_path / "list.pt")
