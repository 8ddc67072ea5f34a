"""Stage 0: data preparation (lhotse manifests -> Kaldi data dirs + trial lists).

  python -m pysv.bin.prepare_data mini     [options] --data-root data
  python -m pysv.bin.prepare_data folder   --corpus-dir DIR [options] --data-root data
  python -m pysv.bin.prepare_data voxceleb --vox2-dir DIR --vox1-dir DIR --trials-dir DIR [options]
  python -m pysv.bin.prepare_data kaldi    --train-data-dir DIR --test-data-dir DIR [--trials FILE] [options]
  python -m pysv.bin.prepare_data musan    --musan-dir DIR [options]
  python -m pysv.bin.prepare_data rirs     --rirs-dir DIR [options]

Run ``python -m pysv.bin.prepare_data <corpus> --help`` for the options of each corpus; docs/data.md
describes layouts, ids and the synthetic voice model.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import List, Optional

from pysv.data.convert_audio import convert_tree
from pysv.data.corpora.folder import prepare_folder
from pysv.data.corpora.kaldi import AUDIO_FORMATS, prepare_kaldi
from pysv.data.corpora.mini import prepare_mini
from pysv.data.corpora.mini_synth import MiniConfig
from pysv.data.corpora.musan import prepare_musan
from pysv.data.corpora.rirs import prepare_rirs
from pysv.data.corpora.voxceleb import prepare_voxceleb
from pysv.data.prepare import AudioOptions, default_nj
from pysv.data.trials import TrialOptions
from pysv.utils.io import DataError
from pysv.utils.logging import setup_logging

logger = logging.getLogger("pysv.prepare_data")

OUTPUTS = """
outputs (per set <set>):
  <data-root>/manifests/<corpus>_{recordings,supervisions,cuts}_<set>.jsonl.gz   lhotse manifests
  <data-root>/<set>/{wav.scp,utt2spk,spk2utt,utt2dur}                           Kaldi data dir
  <data-root>/<set>/trials (test sets)                                           'enroll test target|nontarget'
  <data-root>/<set>/.done                                                        written last
A stage whose .done markers record the same configuration (and whose outputs are intact) is skipped
(use --force to redo it).
Inputs are validated before anything is written: bad input stops with an error naming the file /
utterance / speaker and leaves no output.
"""



SET_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def set_name(text: str) -> str:
    """argparse type of --name: set names become directory names and shell words, so only
    letters, digits, '.', '_' and '-' are accepted."""
    if not SET_NAME.match(text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"{text!r}: set names may only hold letters, digits, '.', '_' and '-'")
    return text

def _csv(s: str) -> List[str]:
    return [x for x in (t.strip() for t in s.split(",")) if x]


def _common(check_audio_default: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--data-root", default="data", help="root of the data dirs and manifests (default: data)")
    g.add_argument("--sample-rate", type=int, default=16000,
                   help="required sample rate of all audio in Hz (default: 16000)")
    g.add_argument("--on-rate-mismatch", choices=["refuse", "resample"], default="refuse",
                   help="a file at another rate: 'refuse' (default: error naming the file) or 'resample' "
                        "(lhotse Recording.resample recorded in the manifest; wav.scp then points at "
                        "resampled FLAC copies under <data-root>/<set>/wav<rate>k/ (<data-root>/<name>/audio/ "
                        "for musan/rirs), since it cannot hold pipes)")
    g.add_argument("--check-audio", action=argparse.BooleanOptionalAction, default=check_audio_default,
                   help="decode every file fully to catch corrupt/truncated and all-zero audio; without it "
                        "only the header is read (soundfile.info: missing, unreadable, empty, wrong rate, "
                        f"multi-channel) (default: {'on' if check_audio_default else 'off'})")
    g.add_argument("--nj", type=int, default=default_nj(),
                   help=f"parallel processes for audio checks / generation (default: {default_nj()})")
    g.add_argument("--min-utt-duration", type=float, default=0.5,
                   help="utterances shorter than this many seconds are left out of the sets (with the trials "
                        "naming them) and listed in <set>/short_utts (default: 0.5)")
    g.add_argument("--force", action="store_true", help="redo the stage even if it is complete")
    g.add_argument("--log-file", default=None, help="also write the log to this file")
    g.add_argument("--no-progress", action="store_true", help="disable progress bars")
    return p


def _trial_args(p: argparse.ArgumentParser, seed_default: int) -> None:
    g = p.add_argument_group("trials")
    g.add_argument("--seed", type=int, default=seed_default,
                   help=f"seed of the speaker split and the trial sampling (default: {seed_default})")
    g.add_argument("--max-target-trials", type=int, default=0,
                   help="use a seeded sample of at most this many target trials (default: 0 = every "
                        "same-speaker pair of test utterances)")
    g.add_argument("--nontarget-ratio", type=float, default=1.0,
                   help="number of non-target trials as a multiple of the target trials, drawn uniformly "
                        "without replacement from all different-speaker pairs (default: 1.0)")


def _augment_parser(sub, corpus: str, group: str, dir_help: str, select: str, select_help: str,
                    **parser_kwargs) -> None:
    """Sub-command ``corpus`` (musan | rirs): --<corpus>-dir (required), the comma-list option
    ``select`` (what to keep) and --name (default: ``corpus``)."""
    p = sub.add_parser(corpus, parents=[_common(True)], formatter_class=argparse.RawDescriptionHelpFormatter,
                       **parser_kwargs)
    g = p.add_argument_group(group)
    g.add_argument(f"--{corpus}-dir", required=True, help=dir_help)
    g.add_argument(select, type=_csv, default=None, help=select_help)
    g.add_argument("--name", default=corpus, type=set_name, help=f"set / manifest name (default: {corpus})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pysv.bin.prepare_data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=OUTPUTS)
    sub = ap.add_subparsers(dest="corpus", required=True, metavar="{mini,folder,voxceleb,kaldi,musan,rirs}")
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("mini", parents=[_common(True)], formatter_class=fmt,
                       help="built-in synthetic corpus (generated locally, deterministic)",
                       description="Generate the synthetic mini corpus (source-filter voices; see docs/data.md) "
                                   "into --corpus-dir/wav/<spk>/<utt>.flac, then prepare <name>_train (the "
                                   "first speakers) and <name>_test (the last --num-test-speakers, unseen in "
                                   "training) with a trial list.", epilog=OUTPUTS)
    g = p.add_argument_group("mini corpus")
    g.add_argument("--corpus-dir", default=None,
                   help="where the audio is generated (default: <data-root>/mini_corpus)")
    g.add_argument("--name", default="mini", type=set_name,
                   help="set / corpus name: sets <name>_train, <name>_test (default: mini)")
    g.add_argument("--num-speakers", type=int, default=48, help="speakers in total (default: 48)")
    g.add_argument("--num-test-speakers", type=int, default=16,
                   help="speakers held out for the test set (default: 16; 0 = no test set)")
    g.add_argument("--utts-per-speaker", type=int, default=12, help="utterances per speaker (default: 12)")
    g.add_argument("--min-duration", type=float, default=2.0, help="shortest utterance in s (default: 2)")
    g.add_argument("--max-duration", type=float, default=6.0, help="longest utterance in s (default: 6)")
    g.add_argument("--min-snr", type=float, default=10.0, help="lowest background-noise SNR in dB (default: 10)")
    g.add_argument("--max-snr", type=float, default=30.0, help="highest background-noise SNR in dB (default: 30)")
    g.add_argument("--reverb-prob", type=float, default=0.3,
                   help="probability that an utterance is reverberated (default: 0.3)")
    g.add_argument("--audio-format", choices=["flac", "wav"], default="flac", help="file format (default: flac)")
    _trial_args(p, 777)

    p = sub.add_parser("folder", parents=[_common(True)], formatter_class=fmt,
                       help="any <speaker>/<utterance>.{wav,flac} directory",
                       description="Prepare <name>_train and <name>_test from a directory of speaker folders "
                                   "(<corpus-dir>/<speaker>/<utt>.wav|.flac; deeper nesting such as "
                                   "<speaker>/<session>/<utt>.wav is allowed and joined with '-'). Utterance "
                                   "ids are <speaker>-<file stem>, or the stem when it already starts with "
                                   "'<speaker>-'. The test speakers are a separate directory, a list, one of "
                                   "N seeded folds, or a seeded fraction; train and test speakers are always "
                                   "disjoint.",
                       epilog=OUTPUTS)
    g = p.add_argument_group("folder corpus")
    g.add_argument("--corpus-dir", required=True, help="directory of <speaker>/<utterance>.{wav,flac}")
    g.add_argument("--name", default="folder", type=set_name,
                   help="set / corpus name: sets <name>_train, <name>_test (default: folder)")
    g.add_argument("--test-corpus-dir", default=None,
                   help="separate test directory of the same layout (then all of --corpus-dir is training)")
    g.add_argument("--test-speakers", default=None,
                   help="file with one test speaker id per line (first field); the others are training")
    g.add_argument("--test-fold", metavar="K/N", default=None,
                   help="test on fold K of N disjoint seeded folds of the speakers (the same --seed gives the "
                        "same folds; K = 1..N in turn tests every speaker once: k-fold cross-validation)")
    g.add_argument("--test-fraction", type=float, default=0.2,
                   help="fraction of speakers drawn (seeded) as test speakers when neither of the above is "
                        "given (default: 0.2; at least 2 speakers; 0 = no test set)")
    g.add_argument("--convert-audio", metavar="DIR", default=None,
                   help="first convert every .m4a (.aac, .mp3, .opus, ...) under --corpus-dir with ffmpeg to "
                        "mono FLAC at --sample-rate under DIR (same relative layout; .wav/.flac files are "
                        "linked), in --nj parallel ffmpeg processes, resumable; then read the corpus from DIR "
                        "(a --test-corpus-dir goes to DIR_test)")
    _trial_args(p, 0)

    p = sub.add_parser("voxceleb", parents=[_common(False)], formatter_class=fmt,
                       help="VoxCeleb1/2 from local directories (no download)",
                       description="Training set from VoxCeleb2-dev (and/or VoxCeleb1-dev), test set vox1_test "
                                   "from the VoxCeleb1 utterances named by the cleaned Vox1-O/E/H trial lists "
                                   "(converted to trials_O, trials_E, trials_H; 'trials' = the first of them). "
                                   "Utterance ids are idXXXXX-<video>-<nnnnn>. VoxCeleb2 ships AAC (.m4a), "
                                   "which soundfile cannot read: pass --convert-audio DIR (ffmpeg), or convert "
                                   "it yourself (docs/data.md); .m4a files without a .wav/.flac twin are "
                                   "refused. Training on VoxCeleb1-dev while "
                                   "testing on Vox1-E/H is refused (speaker overlap).", epilog=OUTPUTS)
    g = p.add_argument_group("voxceleb")
    g.add_argument("--vox1-dir", action="append", default=[],
                   help="VoxCeleb1 directory holding wav/idXXXXX/<video>/<nnnnn>.wav (or the idXXXXX folders "
                        "directly); repeat for separate dev and test downloads")
    g.add_argument("--vox2-dir", default=None,
                   help="VoxCeleb2 directory with dev/wav/, wav/, dev/aac/ or aac/ holding idXXXXX/<video>/"
                        "<nnnnn>.wav (converted from .m4a)")
    g.add_argument("--train-corpora", type=_csv, default=None,
                   help="comma list from vox2_dev, vox1_dev, or 'none' (default: vox2_dev when --vox2-dir is "
                        "given, else vox1_dev when only Vox1-O is tested, else none)")
    g.add_argument("--trials-dir", default=None,
                   help="directory with the cleaned lists veri_test2.txt (O), list_test_all2.txt (E), "
                        "list_test_hard2.txt (H); those present are used")
    g.add_argument("--vox1-o", default=None, help="Vox1-O trial list (veri_test2.txt); overrides --trials-dir")
    g.add_argument("--vox1-e", default=None, help="Vox1-E trial list (list_test_all2.txt)")
    g.add_argument("--vox1-h", default=None, help="Vox1-H trial list (list_test_hard2.txt)")
    g.add_argument("--train-set-name", default=None,
                   help="training set name (default: vox2_dev, vox1_dev, or vox12_dev for both)")
    g.add_argument("--test-set-name", default="vox1_test", help="test set name (default: vox1_test)")
    g.add_argument("--convert-audio", metavar="DIR", default=None,
                   help="first convert every .m4a under --vox2-dir with ffmpeg to mono FLAC at --sample-rate "
                        "under DIR (same relative layout, e.g. DIR/dev/aac/idXXXXX/<video>/<nnnnn>.flac), in "
                        "--nj parallel ffmpeg processes, resumable; then read VoxCeleb2 from DIR")

    p = sub.add_parser("kaldi", parents=[_common(True)], formatter_class=fmt,
                       help="existing Kaldi data dirs (wav.scp with paths or commands, optional segments)",
                       description="Prepare <name>_train and <name>_test from Kaldi data dirs (wav.scp, utt2spk, "
                                   "optional segments; other files are ignored) through lhotse's Kaldi import. "
                                   "Audio that comes from a command ('... |', run once per recording in the "
                                   "current directory) or from a segment is written as mono files at "
                                   "--sample-rate to <data-root>/<set>/audio/<utt>.<audio-format>, so that "
                                   "wav.scp lists plain files; whole-recording plain files are used where they "
                                   "are. Utterance ids must start with their speaker id (Kaldi's convention). "
                                   "Trials: --trials, else <test-data-dir>/trials, else generated from the test "
                                   "speakers.", epilog=OUTPUTS)
    g = p.add_argument_group("kaldi data dirs")
    g.add_argument("--train-data-dir", default=None, help="Kaldi data dir of the training set")
    g.add_argument("--test-data-dir", default=None, help="Kaldi data dir of the test set")
    g.add_argument("--trials", default=None,
                   help="trial list of the test set ('enroll test target|nontarget' or VoxCeleb's '1 a b') "
                        "(default: <test-data-dir>/trials if it exists, else generated)")
    g.add_argument("--name", default="kaldi", type=set_name,
                   help="set / corpus name: sets <name>_train, <name>_test (default: kaldi)")
    g.add_argument("--audio-format", choices=list(AUDIO_FORMATS), default="flac",
                   help="format of the audio written for commands and segments, 16-bit (default: flac)")
    _trial_args(p, 0)

    _augment_parser(sub, "musan", "noise",
                    help="noise / music / speech for additive augmentation (MUSAN or a folder of categories)",
                    description="Noise recordings from MUSAN (musan/{noise,music,speech}/<source>/*.wav) or any "
                                "folder of category folders (<category>/<id>.{wav,flac}, with optional "
                                "wav.list / files.tsv). Writes <data-root>/manifests/<name>_{recordings,"
                                "supervisions,cuts}.jsonl.gz (custom field 'category') and <data-root>/<name>/"
                                "{wav.scp,utt2category,utt2dur,utt2spk,spk2utt}.",
                    dir_help="MUSAN root (or a folder of <category>/ folders)",
                    select="--categories",
                    select_help="comma list of categories to keep, e.g. noise,music,speech (default: all found)")
    _augment_parser(sub, "rirs", "rirs",
                    help="room impulse responses (RIRS_NOISES or a folder of RIRs)",
                    description="RIRs from RIRS_NOISES (simulated_rirs/<type>/Room*/*.wav, "
                                "real_rirs_isotropic_noises/*.wav without the noise recordings) or any folder "
                                "of <id>.{wav,flac} (optional wav.list / files.tsv with a 'room' column). "
                                "Multi-channel files become one mono recording per channel. Writes "
                                "<data-root>/manifests/<name>_{recordings,supervisions,cuts}.jsonl.gz and "
                                "<data-root>/<name>/{wav.scp,utt2room,utt2type,utt2dur,utt2spk,spk2utt}.",
                    dir_help="RIRS_NOISES root (or its parent), or a folder of RIR files",
                    select="--rir-types",
                    select_help="for RIRS_NOISES: comma list of simulated, real (default: both)")
    return ap


def _convert(args: argparse.Namespace, audio: AudioOptions) -> None:
    """--convert-audio DIR: convert the corpus tree(s) into DIR, which is then read instead."""
    out = args.convert_audio.rstrip("/") or "/"
    kw = dict(sample_rate=args.sample_rate, nj=audio.nj, progress=audio.progress)
    if args.corpus == "folder":
        convert_tree(args.corpus_dir, out, what="corpus", **kw)
        args.corpus_dir = out
        if args.test_corpus_dir:
            convert_tree(args.test_corpus_dir, out + "_test", what="test corpus", **kw)
            args.test_corpus_dir = out + "_test"
    elif args.corpus == "voxceleb":
        if not args.vox2_dir:
            raise DataError("--convert-audio converts --vox2-dir, which was not given")
        convert_tree(args.vox2_dir, out, what="VoxCeleb2", **kw)
        args.vox2_dir = out


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_file)
    audio = AudioOptions(sample_rate=args.sample_rate, on_rate_mismatch=args.on_rate_mismatch,
                         check_audio=args.check_audio, nj=max(1, args.nj), progress=not args.no_progress,
                         min_duration=args.min_utt_duration)
    logger.info("preparing %s: %s", args.corpus, " ".join(sys.argv[1:]) if argv is None else " ".join(argv))
    try:
        if getattr(args, "convert_audio", None):
            _convert(args, audio)
        if args.corpus == "mini":
            cfg = MiniConfig(num_speakers=args.num_speakers, utts_per_speaker=args.utts_per_speaker,
                             min_duration=args.min_duration, max_duration=args.max_duration,
                             sample_rate=args.sample_rate, seed=args.seed,
                             snr_range=(args.min_snr, args.max_snr), reverb_prob=args.reverb_prob,
                             audio_format=args.audio_format)
            prepare_mini(args.data_root, args.corpus_dir, args.num_test_speakers, cfg,
                         TrialOptions(args.seed, args.max_target_trials, args.nontarget_ratio), audio,
                         name=args.name, force=args.force)
        elif args.corpus == "folder":
            prepare_folder(args.corpus_dir, args.data_root, args.name, args.test_corpus_dir, args.test_speakers,
                           args.test_fraction, TrialOptions(args.seed, args.max_target_trials, args.nontarget_ratio),
                           audio, force=args.force, test_fold=args.test_fold)
        elif args.corpus == "voxceleb":
            prepare_voxceleb(args.data_root, args.vox1_dir, args.vox2_dir, args.train_corpora,
                             {"O": args.vox1_o, "E": args.vox1_e, "H": args.vox1_h}, args.trials_dir,
                             args.train_set_name, args.test_set_name, audio, force=args.force)
        elif args.corpus == "kaldi":
            prepare_kaldi(args.train_data_dir, args.test_data_dir, args.data_root, args.name, args.trials,
                          TrialOptions(args.seed, args.max_target_trials, args.nontarget_ratio), audio,
                          audio_format=args.audio_format, force=args.force)
        elif args.corpus == "musan":
            prepare_musan(args.musan_dir, args.data_root, args.name, args.categories, audio, force=args.force)
        elif args.corpus == "rirs":
            prepare_rirs(args.rirs_dir, args.data_root, args.name, args.rir_types, audio, force=args.force)
    except DataError as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
