#!/usr/bin/env bash
# pysv speaker-verification recipe (Kaldi style).
#
#   ./run.sh                                   # whole recipe on the built-in mini corpus (CPU, minutes)
#   ./run.sh --stage 2 --stop-stage 2 --systems thin_resnet34_mp_balance
#   ./run.sh --corpus folder --corpus-dir ../shared/data/so762_dev/wav --systems paper
#   ./run.sh --corpus voxceleb --vox1-dir /data/voxceleb1 --vox2-dir /data/voxceleb2 \
#            --vox-trials-dir /data/voxceleb1/lists --systems all --ngpu 8
#
# Stages (each skips work that is already complete; outputs are written atomically):
#   0  data preparation with lhotse: manifests (data/manifests), Kaldi data dirs, trial lists
#   1  features (kaldiio ark/scp) for every feature type the selected systems use
#   2  training, one run per system (exp/<system>)
#   3  embedding extraction (exp/<system>/embeddings/<set>)
#   4  back-ends: mean, LDA, PLDA trained on the training-set embeddings (exp/<system>/backend)
#   5  scoring, EER / minDCF, DET plots, results table (exp/RESULTS.md) and EER-curve comparison
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=5
corpus=mini               # mini | folder | voxceleb | kaldi
corpus_dir=               # folder: <speaker>/<utt>.{wav,flac}
test_corpus_dir=          # folder: separate test directory (else a speaker-disjoint split)
test_fraction=0.2         # folder: fraction of speakers held out for testing
test_speakers=            # folder: file of test speaker ids instead (one per line)
test_fold=                # folder: K/N = test on fold K of N seeded speaker folds instead (cross-validation)
name=                     # folder, kaldi: set-name prefix (default: the corpus name)
nontarget_ratio=1.0       # folder, kaldi: non-target trials per target trial (generated trials)
vox1_dir=                 # voxceleb: VoxCeleb1 root (wav/idXXXXX/...)
vox2_dir=                 # voxceleb: VoxCeleb2 root (dev/aac or dev/wav)
vox_trials_dir=           # voxceleb: folder with veri_test2.txt list_test_all2.txt list_test_hard2.txt
convert_audio=            # folder, voxceleb: convert .m4a (VoxCeleb2's AAC) etc. with ffmpeg to FLAC under this dir first
train_data_dir=           # kaldi: Kaldi data dir of the training set (wav.scp with paths or commands, segments)
test_data_dir=            # kaldi: Kaldi data dir of the test set
trials=                   # kaldi: trial list of the test set (default: <test-data-dir>/trials, else generated)
musan_dir=                # optional: MUSAN root (e.g. ../shared/data/noise): training augmentation with it
rirs_dir=                 # optional: RIRS_NOISES root (e.g. ../shared/data/rir): reverberation in training
site_musan_dir=../shared/data/noise  # this site's MUSAN-like folder: stage 0 prepares it, without --musan-dir,
site_rirs_dir=../shared/data/rir     # when a selected system's own config trains with the set (e.g. --systems
                          # small); the other systems still train without augmentation. Empty: refuse instead
vad=none                  # stage 1: energy = keep only voiced frames (Kaldi compute-vad, VoxCeleb options)
speed_perturb=none        # training: none | new (0.9/1.0/1.1 on the fly, copies = new speakers) | same (same speakers)
systems=default           # default | paper | all | list of conf/<system>.yaml names
nj=2                      # parallel jobs for features and extraction
ngpu=0                    # >1: torchrun with this many processes per node for training
train_opts=               # extra key=value overrides for every training run
backends="cosine plda fusion"  # back-ends scored in stage 5 (cosine cosine_mean plda asnorm fusion), plus the
                          # system's protocol back-end; fusion: stage 5's calibration fits it (needs calibrate=true)
lda_dim=200               # LDA dimension for PLDA (capped at the embedding dim and #train speakers - 1)
extract_mode=             # test protocol: full | crops | tta (default: each system's extract.mode)
extract_precision=fp32    # stage 3 forward pass: fp32 (exact) | bf16 | auto (faster where native)
exp=exp                   # experiment root: exp/<system>/
force=false               # true: redo stages 0, 1, 3, 4, 5 even where their outputs are complete
overwrite=false           # true: retrain the selected systems from scratch (stage 2 deletes exp/<system>)
on_rate_mismatch=refuse   # folder, kaldi corpora: audio at another sample rate: refuse | resample
min_utt_duration=0.5      # stage 0: shorter utterances are left out (listed in data/<set>/short_utts)
skip_missing=false        # true: stage 5 skips (and counts) trials naming utterances without embeddings
calibrate=true            # stage 5: calibrate scores to LLRs on the held-out training speakers (pysv.bin.calibrate)
calibration_far=          # stage 5: decision threshold at this false-accept rate (default: the EER point)

. ./utils/parse_options.sh

if [[ -n $name && ! $name =~ ^[A-Za-z0-9._-]+$ ]]; then
  echo "run.sh: --name '$name': set names may only hold letters, digits, '.', '_' and '-'" >&2; exit 1
fi

steps/bootstrap.sh
. ./path.sh
. ./cmd.sh

log() { echo "$(date '+%H:%M:%S') [run.sh] $*"; }
force_flag=; [[ $force == true ]] && force_flag=--force

# profile: every system's adaptation to the corpus (pysv.bin.train --profile KEY=VALUE): applied
# like an override, except to the keys a system lists in keep_over_profile (a fine-tuning step's or a
# time-budgeted system's own epochs, a toolkit-equivalent config's batch)
case $corpus in
  mini)     train_set=mini_train; test_set=mini_test; trial_lists="trials"
            # configs with optim.lr_batch scale their learning rate linearly to the profile's batch
            profile="train.epochs=12 sampler.batch_size=48 data.valid_speakers=6 data.num_workers=1 train.log_interval=2" ;;
  folder)   [[ -n $corpus_dir ]] || { echo "run.sh: --corpus folder needs --corpus-dir" >&2; exit 1; }
            name=${name:-folder}; train_set=${name}_train; test_set=${name}_test; trial_lists="trials"
            profile="train.epochs=30 sampler.batch_size=64 data.valid_speakers=10 data.num_workers=1" ;;
  voxceleb) train_set=vox2_dev; test_set=vox1_test; trial_lists="trials_O trials_E trials_H"
            profile="" ;;
  kaldi)    [[ -n $train_data_dir && -n $test_data_dir ]] \
              || { echo "run.sh: --corpus kaldi needs --train-data-dir and --test-data-dir" >&2; exit 1; }
            name=${name:-kaldi}; train_set=${name}_train; test_set=${name}_test; trial_lists="trials"
            profile="train.epochs=30 sampler.batch_size=64 data.valid_speakers=10 data.num_workers=1" ;;
  *) echo "run.sh: unknown --corpus $corpus (mini|folder|voxceleb|kaldi)" >&2; exit 1 ;;
esac
system_list=$(python -m pysv.bin.systems list $systems)
log "corpus $corpus: train $train_set, test $test_set; systems: $(echo $system_list)"
# a system whose own config trains with augmentation (e.g. small_data_cpu) needs the sets' manifests,
# which stage 0 writes from --musan-dir / --rirs-dir, or else from the site's folders (--site-musan-dir /
# --site-rirs-dir, as Kaldi recipes name their site's MUSAN and RIR folders) when they exist; those only
# prepare the sets (prepare_*_dir), they do not turn augmentation on for every system as the flags do.
# Neither, or stage 0 not run: refuse now rather than at stage 2
prepare_musan_dir=$musan_dir; prepare_rirs_dir=$rirs_dir
runs_stage0=false; [[ $stage -le 0 && $stop_stage -ge 0 ]] && runs_stage0=true
while read -r aug_sys aug_set aug_manifest; do
  [[ -z ${aug_sys:-} || -f $aug_manifest ]] && continue
  # aug_set is musan or rirs: its flag --<set>-dir, its variables prepare_<set>_dir and site_<set>_dir
  aug_flag=--$aug_set-dir; dir_var=prepare_${aug_set}_dir; site_dir_var=site_${aug_set}_dir
  if [[ -z ${!dir_var} && -n ${!site_dir_var} && -d ${!site_dir_var} && $runs_stage0 == true ]]; then
    printf -v "$dir_var" %s "${!site_dir_var}"
    log "system $aug_sys trains with the augmentation set $aug_set; no $aug_flag given: stage 0 prepares" \
        "it from the site's folder ${!dir_var} (the other systems train without augmentation)"
  fi
  if [[ -z ${!dir_var} || $runs_stage0 == false ]]; then
    echo "run.sh: system $aug_sys trains with the augmentation set $aug_manifest (conf/$aug_sys.yaml" \
         "data.augment.$aug_set), which is not prepared: pass $aug_flag DIR (e.g. $aug_flag" \
         "../shared/data/$([[ $aug_set == rirs ]] && echo rir || echo noise)) and run stage 0, which writes it" >&2
    exit 1
  fi
done < <(python -m pysv.bin.systems augment-sets $system_list)

if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
  log "stage 0: data preparation"
  if [[ -n $convert_audio && ($corpus == folder || $corpus == voxceleb && -n $vox2_dir) ]]; then
    # --convert-audio DIR: the conversion in --nj jobs through $cpu_cmd (resumable); the preparation
    # below, given the same DIR, then finds every file converted and only checks them
    ca=$convert_audio; while [[ $ca == */ && $ca != / ]]; do ca=${ca%/}; done
    if [[ $corpus == folder ]]; then
      steps/convert_audio.sh --nj "$nj" --cmd "$cpu_cmd" --what corpus "$corpus_dir" "$ca"
      if [[ -n $test_corpus_dir ]]; then
        steps/convert_audio.sh --nj "$nj" --cmd "$cpu_cmd" --what "test corpus" "$test_corpus_dir" "${ca}_test"
      fi
    else
      steps/convert_audio.sh --nj "$nj" --cmd "$cpu_cmd" --what VoxCeleb2 "$vox2_dir" "$ca"
    fi
  fi
  case $corpus in
    mini)     local/prepare_mini.sh --data-root data --min-utt-duration "$min_utt_duration" $force_flag ;;
    folder)   local/prepare_folder.sh --data-root data --name "$name" --corpus-dir "$corpus_dir" \
                ${test_corpus_dir:+--test-corpus-dir "$test_corpus_dir"} --test-fraction "$test_fraction" \
                ${test_speakers:+--test-speakers "$test_speakers"} ${test_fold:+--test-fold "$test_fold"} \
                --nontarget-ratio "$nontarget_ratio" --on-rate-mismatch "$on_rate_mismatch" \
                ${convert_audio:+--convert-audio "$convert_audio" --nj "$nj"} \
                --min-utt-duration "$min_utt_duration" $force_flag ;;
    voxceleb) local/prepare_voxceleb.sh --data-root data --vox1-dir "$vox1_dir" \
                ${vox2_dir:+--vox2-dir "$vox2_dir"} --trials-dir "$vox_trials_dir" \
                ${convert_audio:+--convert-audio "$convert_audio" --nj "$nj"} \
                --min-utt-duration "$min_utt_duration" $force_flag ;;
    kaldi)    local/prepare_kaldi.sh --data-root data --name "$name" --train-data-dir "$train_data_dir" \
                --test-data-dir "$test_data_dir" ${trials:+--trials "$trials"} --nontarget-ratio "$nontarget_ratio" \
                --on-rate-mismatch "$on_rate_mismatch" --min-utt-duration "$min_utt_duration" $force_flag ;;
  esac
  if [[ -n $prepare_musan_dir || -n $prepare_rirs_dir ]]; then
    local/prepare_augmentation.sh --data-root data ${prepare_musan_dir:+--musan-dir "$prepare_musan_dir"} \
      ${prepare_rirs_dir:+--rirs-dir "$prepare_rirs_dir"}
  fi
fi

if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  log "stage 1: features"
  feats=$(for s in $system_list; do python -m pysv.bin.systems get "$s" data.feature; done | sort -u | grep -v '^$' || true)
  for feat in $feats; do
    steps/make_features.sh --nj "$nj" --cmd "$cpu_cmd" --force "$force" --vad "$vad" "$feat" "data/$train_set" \
      "data/${train_set}_$(basename "$feat" .yaml)"
    # the sets a system is tested on: no dither, so that the features (and stage 3's embeddings) are
    # those `pysv.load(...).embed` computes for the same audio
    steps/make_features.sh --nj "$nj" --cmd "$cpu_cmd" --force "$force" --vad "$vad" "$feat" "data/$test_set" \
      "data/${test_set}_$(basename "$feat" .yaml)" dither=0
  done
fi

# --musan-dir / --rirs-dir: every system trains with the Kaldi / wespeaker mix on waveform crops
# (pysv.data.waveform_augment defaults: per crop with probability 0.6 one of noise 0-15 dB, music
# 5-15 dB, babble of 3-7 speakers at 13-20 dB, reverberation), features computed on the fly
augment_opts=()
case $speed_perturb in
  none) ;;
  new|same) augment_opts+=("data.speed_perturb={factors: [0.9, 1.0, 1.1], new_speakers: $([[ $speed_perturb == new ]] && echo true || echo false)}") ;;
  *) echo "run.sh: --speed-perturb must be none, new or same, got '$speed_perturb'" >&2; exit 1 ;;
esac
if [[ -n $musan_dir || -n $rirs_dir ]]; then
  augment_opts+=("data.augment={prob: 0.6${musan_dir:+, musan: data/manifests/musan_recordings.jsonl.gz}${rirs_dir:+, rirs: data/manifests/rirs_recordings.jsonl.gz}}"
                "data.on_the_fly_features=true")
fi

if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  log "stage 2: training"
  for sys in $system_list; do
    log "training $sys"
    init_opts=()  # a fine-tuning system starts from a run of this experiment root (conf names exp/...)
    init=$(python -m pysv.bin.systems get "$sys" train.init_from)
    [[ $init == exp/* && $exp != exp ]] && init_opts=("train.init_from=$exp/${init#exp/}")
    profile_args=(); for kv in $profile; do profile_args+=(--profile "$kv"); done
    args=(--config "conf/$sys.yaml" --exp-dir "$exp/$sys" --resume "data.train=data/$train_set"
          ${profile_args[@]+"${profile_args[@]}"}
          ${augment_opts[@]+"${augment_opts[@]}"} ${init_opts[@]+"${init_opts[@]}"} $train_opts)
    [[ $overwrite == true ]] && args=(--overwrite "${args[@]}")
    if [[ $ngpu -gt 1 ]]; then
      launcher=(torchrun --standalone --nproc_per_node "$ngpu" -m pysv.bin.train --device cuda)
    else
      launcher=(python -m pysv.bin.train)
    fi
    if [[ -n ${train_cmd:-} ]]; then
      $train_cmd "$exp/$sys/log/train.log" "${launcher[@]}" "${args[@]}"
    else
      "${launcher[@]}" "${args[@]}"
    fi
  done
  # every system trained under $exp so far, not only this call's (the figure is the recipe's overview)
  python -m pysv.bin.plot_curves --exp-root "$exp" --out "$exp/valid_eer_curves.png"
fi

# The test protocol of a system: --extract-mode, else extract.mode of its resolved config.
protocol() {
  if [[ -n $extract_mode ]]; then echo "$extract_mode"
  elif [[ -f $exp/$1/config.yaml ]]; then python -m pysv.bin.systems get "$exp/$1/config.yaml" extract.mode
  else python -m pysv.bin.systems get "$1" extract.mode; fi
}

if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  log "stage 3: embedding extraction"
  for sys in $system_list; do
    # full-utterance embeddings of both sets (cosine, PLDA, AS-norm) ...
    for set in $train_set $test_set; do
      steps/extract_embeddings.sh --nj "$nj" --cmd "$cpu_cmd" --force "$force" --precision "$extract_precision" --mode full "$exp/$sys" "data/$set"
    done
    # ... and the test set under the system's own protocol (crops: MP-2021 / MP-2020, tta: RawNet2)
    mode=$(protocol "$sys")
    if [[ $mode != full ]]; then
      steps/extract_embeddings.sh --nj "$nj" --cmd "$cpu_cmd" --force "$force" --precision "$extract_precision" --mode "$mode" "$exp/$sys" "data/$test_set"
    fi
  done
fi

if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
  log "stage 4: back-ends"
  for sys in $system_list; do
    # with calibration, the held-out validation speakers (stage 5's development trials) stay out of LDA/PLDA;
    # --cap-lda-dim: at most the embedding dimension and #speakers - 1 of what the back-end is fitted on
    exclude=()
    if [[ $calibrate == true && -f $exp/$sys/valid_speakers ]]; then
      exclude=(--exclude-speakers "$exp/$sys/valid_speakers")
    fi
    python -m pysv.bin.backend --exp "$exp/$sys" --train-set "$train_set" \
      --utt2spk "data/$train_set/utt2spk" --lda-dim "$lda_dim" --cap-lda-dim ${exclude[@]+"${exclude[@]}"} $force_flag
  done
fi

if [[ $stage -le 5 && $stop_stage -ge 5 ]]; then
  log "stage 5: scoring"
  skip_missing_flag=; [[ $skip_missing == true ]] && skip_missing_flag=--skip-missing
  for sys in $system_list; do
    # calibration (score -> LLR) and the decision threshold, on trials of the held-out training speakers
    calibrated=false
    if [[ $calibrate == true && -f $exp/$sys/valid_speakers ]]; then
      python -m pysv.bin.calibrate --exp "$exp/$sys" --train-set "$train_set" --utt2spk "data/$train_set/utt2spk" \
        --backends "$backends" ${calibration_far:+--far "$calibration_far"} $force_flag
      calibrated=true
    fi
    mode=$(protocol "$sys")
    sys_backends=$backends
    [[ $mode != full && " $backends " != *" $mode "* ]] && sys_backends="$backends $mode"
    for trials in $trial_lists; do
      for backend in $sys_backends; do
        # the fusion's weights come from the calibration: none without held-out speakers or calibrate=false
        [[ $backend == fusion && $calibrated != true ]] && continue
        python -m pysv.bin.score --exp "$exp/$sys" --trials "data/$test_set/$trials" --test-set "$test_set" \
          --train-set "$train_set" --backend "$backend" $force_flag ${skip_missing_flag:-}
      done
    done
  done
  python -m pysv.bin.results_table --exp-root "$exp" --out "$exp/RESULTS.md" > /dev/null
  log "results table: $exp/RESULTS.md"
  cat "$exp/RESULTS.md"
fi
log "done"
