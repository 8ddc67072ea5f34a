"""Training configs: the ``_base_`` chain, DEFAULTS as the one source of defaults, choices checked
against the registries that own them, the system lists of conf/systems.yaml."""
from pathlib import Path

import pytest
import yaml

from pysv import losses, models
from pysv.bin import systems as systems_bin
from pysv.data.samplers import SAMPLERS
from pysv.train.config import DEFAULTS, ConfigError, _flatten, list_systems, load_config, system_lists

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_base_chain_merges_mappings_and_replaces_values(tmp_path):
    write(tmp_path / "base" / "root.yaml", {"data": {"crop": 300, "num_workers": 3},
                                            "model": {"name": "thin_resnet34",
                                                      "hparams": {"embed_dim": 64, "channels": [8, 16, 32, 64]}}})
    write(tmp_path / "base" / "family.yaml", {"_base_": "root.yaml", "optim": {"lr": 0.5},
                                              "model": {"hparams": {"pooling": "tap"}}})
    sysf = write(tmp_path / "my_system.yaml", {"_base_": "base/family.yaml", "data": {"crop": 123},
                                               "model": {"hparams": {"channels": [4, 8, 16, 32]}},
                                               "loss": {"name": "aamsoftmax"}})
    cfg = load_config(str(sysf), ["optim.lr=0.25"])
    assert cfg["system"] == "my_system"
    assert cfg["data"]["crop"] == 123 and cfg["data"]["num_workers"] == 3          # merged key by key
    assert cfg["model"]["hparams"] == {"embed_dim": 64, "pooling": "tap", "channels": [4, 8, 16, 32]}
    assert cfg["optim"]["lr"] == 0.25 and cfg["loss"]["name"] == "aamsoftmax"
    # every key of DEFAULTS is in the resolved config, with its default where no file sets it
    flat = _flatten(cfg)
    assert set(flat) == set(_flatten(DEFAULTS))
    assert flat["sampler.batch_size"] == DEFAULTS["sampler"]["batch_size"]
    # an override of a free-form mapping replaces it (how a plug-in encoder drops the base's hparams)
    assert load_config(str(sysf), ["model.hparams={}"])["model"]["hparams"] == {}


def test_base_chain_errors_name_the_file(tmp_path):
    a = write(tmp_path / "a.yaml", {"_base_": "b.yaml"})
    write(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="loops"):
        load_config(str(a))
    c = write(tmp_path / "c.yaml", {"_base_": "missing.yaml"})
    with pytest.raises(ConfigError, match=r"missing\.yaml.*the _base_ of .*c\.yaml"):
        load_config(str(c))
    d = write(tmp_path / "base.yaml", {"optim": {"lrr": 1}})
    e = write(tmp_path / "e.yaml", {"_base_": "base.yaml"})
    with pytest.raises(ConfigError, match=r"base\.yaml: unknown config key 'optim\.lrr'"):
        load_config(str(e))
    assert d.is_file()


@pytest.mark.parametrize("key,owner", [("model.name", models.names), ("loss.name", losses.names),
                                       ("sampler.kind", SAMPLERS.names)])
def test_choices_come_from_the_registries(key, owner, tmp_path):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [f"{key}=not_registered"])
    for name in owner():  # every registered name is accepted
        load_config(None, [f"{key}={name}"])


def test_feature_and_optimizer_choices():
    with pytest.raises(ConfigError, match="data.feature"):
        load_config(None, ["data.feature=fbank999"])
    with pytest.raises(ConfigError, match="optim.name"):
        load_config(None, ["optim.name=lbfgs"])
    # tools that only read values skip the registry check (no torch import)
    assert load_config(None, ["optim.name=lbfgs"], check_choices=False)["optim"]["name"] == "lbfgs"


def test_system_yamls_state_only_differences():
    """No system or base file repeats a value its base (or DEFAULTS) already has (the encoder and
    loss names excepted: each file says what it is)."""
    conf = REPO / "conf"
    for path in sorted(conf.glob("*.yaml")) + sorted((conf / "base").glob("*.yaml")):
        if path.is_symlink() or path.name == "systems.yaml":
            continue
        raw = yaml.safe_load(path.read_text()) or {}
        base = raw.pop("_base_", None)
        ref = (load_config(str(path.parent / base), check_choices=False) if base
               else load_config(None, check_choices=False))
        for key, value in _flatten(raw).items():
            if key in ("model.hparams", "loss.hparams", "model.name", "loss.name"):
                continue
            assert _flatten(ref).get(key, object()) != value, f"{path.name}: {key}={value!r} repeats its base"


def test_system_lists_name_existing_systems():
    available = list_systems(REPO / "conf")
    lists = system_lists(REPO / "conf")
    assert {"default", "paper"} <= set(lists)
    for names in lists.values():
        assert set(names) <= set(available)
    assert systems_bin.expand(["default"], str(REPO / "conf")) == lists["default"]
    assert systems_bin.expand(["all"], str(REPO / "conf")) == available


def test_profile_applies_except_to_the_keys_a_system_keeps(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 80\n")
    (tmp_path / "ft.yaml").write_text("_base_: base.yaml\nkeep_over_profile: [train.epochs]\ntrain:\n  epochs: 5\n")
    profile = ["train.epochs=30", "sampler.batch_size=64"]
    base = load_config(str(tmp_path / "base.yaml"), profile=profile, check_choices=False)
    assert base["train"]["epochs"] == 30 and base["sampler"]["batch_size"] == 64
    ft = load_config(str(tmp_path / "ft.yaml"), profile=profile, check_choices=False)
    assert ft["train"]["epochs"] == 5 and ft["sampler"]["batch_size"] == 64
    # an explicit override is the user's word: it wins over both
    assert load_config(str(tmp_path / "ft.yaml"), ["train.epochs=2"], profile=profile,
                       check_choices=False)["train"]["epochs"] == 2
    (tmp_path / "bad.yaml").write_text("keep_over_profile: [train.epoch]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: keep_over_profile names 'train.epoch'"):
        load_config(str(tmp_path / "bad.yaml"), check_choices=False)


def test_run_sh_profiles_leave_the_systems_own_budgets_and_batches():
    """The folder profile of run.sh (train.epochs=30, batch 64) must not cut the fine-tuning step to
    30 epochs, the time-budgeted small-data system to 30 epochs, or the voxceleb_trainer-equivalent
    config's batch of 100."""
    run_sh = (REPO / "run.sh").read_text()
    folder = next(line for line in run_sh.splitlines() if line.strip().startswith('profile="train.epochs=30'))
    profile = folder.split('"')[1].split()
    conf = REPO / "conf"
    lmft = load_config(str(conf / "thin_resnet34_aamsoftmax_lmft.yaml"), profile=profile, check_choices=False)
    assert lmft["train"]["epochs"] == 5 and lmft["sampler"]["batch_size"] == 64
    small = load_config(str(conf / "small_data_cpu.yaml"), profile=profile, check_choices=False)
    assert small["train"]["max_minutes"] == 40 and small["train"]["epochs"] > 30
    vt = load_config(str(conf / "thin_resnet34_angleproto_vt.yaml"), profile=profile, check_choices=False)
    assert vt["sampler"]["batch_size"] == 100 and vt["train"]["epochs"] == 30
    assert '--profile "$kv"' in run_sh
