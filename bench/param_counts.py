#!/usr/bin/env python
"""Parameter counts of every encoder / variant (without classifier) against the papers' figures.

Prints a markdown table. "ours" counts every parameter of the module ``pysv.models.build``
returns; "ours, paper convention" is what the paper's figure counts where that differs
(SAEP counts up to the embedding layer; MLA-SAP's "about 6 million" includes the 512 x 1211
output layer). "ratio" is ours (paper convention) / paper.

    PYTHONPATH=. python bench/param_counts.py
"""
from __future__ import annotations

import argparse

from pysv.models import build, count_parameters

VOX1_SPEAKERS = 1211

# (model, hparams, label, convention, paper figure or None, source)
ROWS = [
    ("thin_resnet34", {}, "SAP, SE blocks (default, = voxceleb_trainer ResNetSE34L)", "all", 1.4e6,
     "In defence of metric learning (backbone of MP-2021 / MP-2020): 1.4M"),
    ("thin_resnet34", {"se": False}, "SAP, no SE", "all", 1.4e6, "idem"),
    ("thin_resnet34", {"pooling": "tap"}, "TAP", "all", None, ""),
    ("thin_resnet34", {"pooling": "asp"}, "ASP", "all", None, ""),
    ("xvector", {}, "30-d MFCC (Kaldi recipe)", "embedding", None, ""),
    ("xvector", {"feat_dim": 90}, "90-d MFCC+D+DD", "embedding", 4.38e6, "SAEP Table 1: 4.38M"),
    ("saep", {"d_k": 512, "d_ff": 2048}, "d_k=d_v=512, d_ff=2048 (default)", "embedding", 1.16e6,
     "SAEP Table 1 / sec. 4: 1.16M"),
    ("saep", {"d_k": 128, "d_ff": 2048}, "d_k=d_v=128, d_ff=2048", "embedding", 0.88e6, "SAEP sec. 4: 0.88M"),
    ("saep", {"d_k": 64, "d_ff": 2048}, "d_k=d_v=64, d_ff=2048", "embedding", 0.83e6, "SAEP sec. 4: 0.83M"),
    ("saep", {"d_k": 64, "d_ff": 1024}, "d_k=d_v=64, d_ff=1024", "embedding", 0.45e6, "SAEP sec. 4: 0.45M"),
    ("mla_resnet34", {"encoding": "mla_gap"}, "MLA-GAP (Table 1 baseline)", "classifier", 6.0e6,
     "MLA-SAP sec. 2.2: about 6 million"),
    ("mla_resnet34", {"encoding": "gap"}, "GAP", "all", None, ""),
    ("mla_resnet34", {"encoding": "sap"}, "SAP", "all", None, ""),
    ("mla_resnet34", {"encoding": "mla_sap"}, "MLA-SAP", "all", None, ""),
    ("mla_resnet34", {"encoding": "mla_sap_fr"}, "MLA-SAP-FR", "all", None, ""),
    ("mla_resnet34", {"encoding": "mla_sap_fr_dln"}, "MLA-SAP-FR-DLN (default)", "all", None, ""),
    ("rawnet2", {}, "sinc 251, FMS mul-add, GRU (default = #15 RawNet2)", "all", 7.1e6,
     "reference code: 7.11M incl. 118k LN affine tied to 59049 samples"),
    ("rawnet2", {"fms": "add"}, "FMS add (#8)", "all", None, ""),
    ("rawnet2", {"fms": "mul"}, "FMS mul (#9)", "all", None, ""),
    ("rawnet2", {"fms": "add_mul"}, "FMS add-mul (#10)", "all", None, ""),
    ("rawnet2", {"fms": "mul_add_sep"}, "FMS mul-add-sep (#12)", "all", None, ""),
    ("rawnet2", {"fms": "none", "first_layer": "conv"}, "baseline: strided conv, no FMS (#3)", "all", None, ""),
    ("rawnet2", {"first_layer": "conv"}, "strided conv + FMS mul-add (#11)", "all", None, ""),
    ("rawnet2", {"sinc_length": 125}, "sinc 125 (#13; any length: 2 params/filter)", "all", None, ""),
    ("rawnet2", {"aggregation": "sap"}, "SAP aggregation", "all", None, ""),
    ("rawnet2", {"aggregation": "mhsap"}, "multi-head SAP aggregation (8 heads)", "all", None, ""),
]


def _fmt(n):
    return f"{n:,}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args(argv)
    print("| encoder | variant | ours (all params) | ours, paper convention | paper | ratio | paper source / note |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for name, kw, label, conv, paper, src in ROWS:
        m = build(name, **kw)
        total = count_parameters(m)
        if conv == "embedding":
            comp, note = count_parameters(m, upto_embedding=True), "up to the embedding layer"
        elif conv == "classifier":
            comp = total + m.embed_dim * VOX1_SPEAKERS + VOX1_SPEAKERS
            note = f"+ {m.embed_dim}x{VOX1_SPEAKERS} output layer"
        else:
            comp, note = total, ""
        ratio = f"{comp / paper:.3f}" if paper else "-"
        paper_s = f"{paper / 1e6:.2f} M" if paper else "-"
        comp_s = f"{_fmt(comp)} ({note})" if note else _fmt(comp)
        print(f"| {name} | {label} | {_fmt(total)} | {comp_s} | {paper_s} | {ratio} | {src} |")


if __name__ == "__main__":
    main()
