# Job launchers, Kaldi style. Every parallel step calls
#   $cmd JOB=1:$nj <log>.JOB.log <command with JOB>
# Local machine (default): run jobs as background processes, at most one per core.
export train_cmd=""   # empty: train in the foreground (progress bars on the terminal)
export cpu_cmd="steps/launch/local.sh"
# GPU training runs in the foreground with torchrun (see run.sh --ngpu); on a cluster,
# comment the lines above and select Slurm instead, e.g.:
# export cpu_cmd="steps/launch/slurm.sh --mem 4G --time 4:00:00"
# export train_cmd="steps/launch/slurm.sh --mem 32G --gpu 1 --num-threads 8 --time 48:00:00"
