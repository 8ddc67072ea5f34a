"""Package layout rules that keep each concept in one place."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _modules_after_import(module: str) -> set:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return set(out.stdout.split())


def test_extraction_does_not_import_the_trainer():
    # stage 3 needs the encoder and its weights, not the training loop
    mods = _modules_after_import("pysv.bin.extract")
    assert "pysv.train.trainer" not in mods and "pysv.data.loader" not in mods


def test_reading_configs_stays_light():
    # run.sh reads config values many times: no torch import for that
    code = ("import sys; from pysv.bin.systems import main; main(['get', 'thin_resnet34_angleproto', 'data.feature']);"
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "fbank40", res.stderr

