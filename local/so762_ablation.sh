#!/usr/bin/env bash
# The small-data ablation of RESULTS.md §8 on ../shared/data/so762_dev (speechocean762, 125 speakers):
# every row is the recipe (run.sh stages 2-5) on the same speaker-disjoint split of stage 0 (100
# training speakers, 10 of them held out as validation speakers, 25 unseen test speakers), with one
# training budget (train.max_minutes) on this machine's CPU. Choices are made on the validation
# speakers (history.json valid_eer); the test columns are reported, not used.
#
#   local/so762_ablation.sh [--minutes 10] [--exp-root exp_so762_abl] [--seed 1] [--name so762] [ROW ...]
#                                                                                   (default: every row)
#
# --seed: the training seed of every row (initialisation, crops, augmentation, validation speakers);
# a second seed of a row measures how much its numbers move from training alone.
# --name: the split's set names (<name>_train, <name>_test); local/so762_folds.sh runs the rows on
# each fold of a speaker cross-validation this way.
#
# Needs stages 0-1 of the split first (the augmentation manifests included):
#   ./run.sh --corpus folder --corpus-dir ../shared/data/so762_dev/wav --name so762 \
#            --musan-dir ../shared/data/noise --rirs-dir ../shared/data/rir --stage 0 --stop-stage 1
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

minutes=10
exp_root=exp_so762_abl
corpus_dir=../shared/data/so762_dev/wav
noise_dir=../shared/data/noise
rir_dir=../shared/data/rir
backends="cosine cosine_mean plda asnorm fusion"
seed=
name=so762
print_systems=false       # true: print "ROW-DIR SYSTEM" for each row (its <exp-root>/ROW-DIR/SYSTEM) and run nothing
. ./utils/parse_options.sh

all_rows="vt mean small small_wd small_lmft small_p1 small_e128_sp5 small_m20a small_m20b small_ens small_ens_flat small_ens3 small_ens_mix none mean_aug mean_aug_sp aam_aug aam_aug_spnew mmpb_aug aam_aug_lmft"
rows=${*:-$all_rows}
corpus=(--corpus folder --corpus-dir "$corpus_dir" --name "$name")
aug=(--musan-dir "$noise_dir" --rirs-dir "$rir_dir")
budget="train.epochs=1000 train.max_minutes=$minutes"

# row NAME SYSTEM TRAIN_OPTS [RUN.SH OPTIONS...]: stages 2-5 of SYSTEM under $exp_root/NAME
row() {
  local name=$1 sys=$2 opts=$3
  shift 3
  if [[ $print_systems == true ]]; then echo "$name $sys"; return; fi
  echo "=== row $name: $sys ($opts $*)"
  [[ -n $seed ]] && opts="$opts seed=$seed"
  ${RUN_SH:-./run.sh} "${corpus[@]}" --stage 2 --exp "$exp_root/$name" --systems "$sys" --backends "$backends" \
    --train-opts "$opts" "$@"
}

for r in $rows; do
  case $r in
    # voxceleb_trainer's defaults (Adam 1e-3, batch 100 = 50 x 2, 2 s crops, instance norm, 10 x 3 s crops)
    vt)            row vt thin_resnet34_angleproto_vt "$budget sampler.batch_size=100" ;;
    # pysv's MP-2021 Thin-ResNet34 + angleproto: SGD, lr 0.2 at batch 400 scaled to 64, plateau schedule
    mean)          row mean thin_resnet34_angleproto "$budget model.hparams.input_norm=mean" ;;
    none)          row none thin_resnet34_angleproto "$budget model.hparams.input_norm=none" ;;
    mean_aug)      row mean_aug thin_resnet34_angleproto "$budget model.hparams.input_norm=mean" "${aug[@]}" ;;
    mean_aug_sp)   row mean_aug_sp thin_resnet34_angleproto "$budget model.hparams.input_norm=mean" "${aug[@]}" \
                     --speed-perturb same ;;
    aam_aug)       row aam_aug thin_resnet34_aamsoftmax "$budget model.hparams.input_norm=mean" "${aug[@]}" ;;
    aam_aug_spnew) row aam_aug_spnew thin_resnet34_aamsoftmax "$budget model.hparams.input_norm=mean" "${aug[@]}" \
                     --speed-perturb new ;;
    mmpb_aug)      row mmpb_aug thin_resnet34_mmp_balance "$budget model.hparams.input_norm=mean" "${aug[@]}" ;;
    # large-margin fine-tuning of the aam_aug row's model (conf/thin_resnet34_aamsoftmax_lmft.yaml:
    # init_from <root>/thin_resnet34_aamsoftmax/final.pt), 5 epochs
    aam_aug_lmft)  row aam_aug thin_resnet34_aamsoftmax_lmft "model.hparams.input_norm=mean" "${aug[@]}" ;;
    # the single-model recipe (conf/small_data_cpu.yaml; run.sh --systems small until RESULTS §8f)
    small)         row small small_data_cpu "" ;;
    # the recipe with 10 x the weight decay (5e-4, the usual SGD value for ResNets on small image sets)
    small_wd)      row small_wd small_data_cpu "optim.weight_decay=0.0005" ;;
    # the recipe with every training crop augmented (probability 1.0 instead of wespeaker's 0.6)
    small_p1)      row small_p1 small_data_cpu "data.augment.prob=1.0" ;;
    # the recipe with a 128-d embedding (instead of 512) and speed factors 0.8-1.2 (five, so 450 classes
    # instead of 270): two changes against over-fitting 90 speakers of ~12 utterances (RESULTS §8f)
    small_e128_sp5) row small_e128_sp5 small_data_cpu "model.hparams.embed_dim=128 data.speed_perturb.factors=[0.8,0.9,1.0,1.1,1.2]" ;;
    # the two members of a 2-model ensemble inside the 40-minute budget (RESULTS §8f): the recipe for 20
    # minutes each, seeds 1 and 2, the same held-out validation speakers (data.valid_seed)
    small_m20a)    row small_m20a small_data_cpu "train.max_minutes=20" ;;
    small_m20b)    row small_m20b small_data_cpu "train.max_minutes=20 seed=2 data.valid_seed=1" ;;
    # the seed ensemble, run.sh --systems small from RESULTS §8f until §8k: conf/small_data_cpu_ensemble.yaml
    # (train.ensemble: 2, 20 + 20 minutes)
    small_ens)     row small_ens small_data_cpu_ensemble "" ;;
    # the ensemble with the frequency layout of the last stage kept (channels x 5 bins per frame,
    # voxceleb_trainer's ResNetSE34V2 / wespeaker) and mean + std pooling (wespeaker's TSTP) instead
    # of ResNetSE34L's mean over frequency and SAP (RESULTS §8h)
    small_ens_flat) row small_ens_flat small_data_cpu_ensemble "model.hparams.freq_pool=flatten model.hparams.pooling=stats" ;;
    # the ensemble with three members of a third of the budget each (13.3 minutes, seeds 1-3) instead
    # of two of half (RESULTS §8j)
    small_ens3)    row small_ens3 small_data_cpu_ensemble "train.ensemble=3" ;;
    # the recommended recipe as run.sh --systems small trains it (RESULTS §8k, §8l): the ensemble with a
    # second member of another kind, angleproto without augmentation (conf/small_data_cpu_ensemble_mix.yaml)
    small_ens_mix) row small_ens_mix small_data_cpu_ensemble_mix "" ;;
    # in-budget large-margin fine-tuning (RESULTS §8c, §8d): the recipe trained for 37 minutes (stage 2
    # only), then 5 epochs of conf/small_data_cpu_lmft.yaml from its final.pt (~39 minutes in all)
    small_lmft)    [[ $print_systems == true ]] || row small_lmft small_data_cpu "train.max_minutes=37" --stop-stage 2
                   row small_lmft small_data_cpu_lmft "" ;;
    *) echo "$0: unknown row '$r' (rows: $all_rows)" >&2; exit 1 ;;
  esac
done
[[ $print_systems == true ]] || python -m pysv.bin.results_table --exp-root "$exp_root" 2>/dev/null || true
