"""Adding an encoder or a loss is one file: a throw-away encoder and loss written into a temporary
copy of the package are discovered, built by name and trained through ``python -m pysv.bin.train``
with config overrides only."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ENCODER = '''
import torch
import torch.nn as nn

from pysv.models import register


@register("mean_linear")
class MeanLinear(nn.Module):
    """Time-average of the features, then one linear layer."""
    input_kind = "features"

    def __init__(self, feat_dim: int = 40, embed_dim: int = 16):
        super().__init__()
        self.feat_dim, self.embed_dim = feat_dim, embed_dim
        self.proj = nn.Linear(feat_dim, embed_dim)

    def forward(self, x, lengths=None):
        if lengths is None:
            return self.proj(x.mean(dim=1))
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
        return self.proj((x * mask[..., None]).sum(1) / lengths[:, None].to(x.dtype))
'''

LOSS = '''
import torch
import torch.nn.functional as F

from pysv.losses import LossBase, register


@register("cosine_softmax")
class CosineSoftmax(LossBase):
    """Cross-entropy over scaled cosines to one learnable vector per class."""
    owns_class_vectors = True

    def __init__(self, embed_dim, num_classes, scale: float = 10.0):
        super().__init__(embed_dim, num_classes)
        self.scale = scale
        self.weight = torch.nn.Parameter(torch.randn(num_classes, embed_dim) * 0.01)

    def compute(self, x, labels, split):
        logits = self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()
        return F.cross_entropy(logits, labels), None
'''


def test_an_encoder_file_and_a_loss_file_are_all_it_takes(tiny_recipe, tmp_path):
    pkg = tmp_path / "src" / "pysv"
    shutil.copytree(REPO / "pysv", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "models" / "mean_linear.py").write_text(ENCODER)
    (pkg / "losses" / "cosine_softmax.py").write_text(LOSS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    probe = subprocess.run([sys.executable, "-c", "import pysv, pysv.models as m, pysv.losses as l; "
                            "print(pysv.__file__, 'mean_linear' in m.names(), 'cosine_softmax' in l.names())"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    assert probe.stdout.split() == [str(pkg / "__init__.py"), "True", "True"]

    exp = tmp_path / "exp"
    cmd = [sys.executable, "-m", "pysv.bin.train", "--config", str(REPO / "conf" / "thin_resnet34_softmax.yaml"),
           "--exp-dir", str(exp), "--device", "cpu", "--threads", "1",
           f"data.train={tiny_recipe['train']}", "model.name=mean_linear", "model.hparams={}",
           "loss.name=cosine_softmax", "loss.hparams={scale: 5.0}", "sampler.kind=shuffle",
           "sampler.batch_size=8", "data.crop=100", "data.num_workers=0", "data.valid_speakers=2",
           "train.epochs=1", "scheduler.name=none", "optim.lr=0.05"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    history = json.loads((exp / "history.json").read_text())
    assert len(history) == 1 and history[0]["steps"] >= 1 and history[0]["loss"] > 0
    recorded = (exp / "config.yaml").read_text()
    # the resolved hyper-parameters (the signature defaults) are what the run records
    assert "name: mean_linear" in recorded and "embed_dim: 16" in recorded and "feat_dim: 40" in recorded
