#!/usr/bin/env bash
# A sweep on a real Slurm: starts a one-node cluster on this machine (munge, slurmctld and slurmd on
# localhost; Debian's slurm-wlm and munge, as scripts/setup.sh installs them; needs root or sudo), plans a
# base-to-novel sweep of 12 tasks sharing a feature cache, submits `sweep slurm --features-slices 3`'s
# extraction array and then, once it succeeded, `promptscope sweep slurm`'s script as an array, cancels one
# running task with scancel, resubmits it, collects, then runs the same tasks one by one in-process in
# another folder and collects again. Prints one JSON object: both tables' JSON, whether they are equal,
# the cancelled index and the wall times. tests/integration/sweep.rs runs it.
#
#   scripts/slurm_sweep.sh BIN WORKDIR
set -euo pipefail
bin=$(readlink -f "$1")
work=$(readlink -f "$2")
mkdir -p "$work"
log() { echo "slurm_sweep: $*" >&2; }

for tool in sbatch scancel squeue sinfo slurmctld slurmd munged; do
    command -v "$tool" >/dev/null || { log "'$tool' not found: apt-get install -y slurm-wlm munge"; exit 3; }
done
# The daemons run as root (through sudo where this user is not); the jobs run as this user.
sudo=""
if [ "$(id -u)" != 0 ]; then
    sudo -n true 2>/dev/null || { log "starting slurmd needs root (or sudo without a password)"; exit 3; }
    sudo="sudo -n"
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)

if ! scontrol ping 2>/dev/null | grep -q UP; then
    log "starting munge, slurmctld and slurmd on $host ($cpus CPUs, $mem MB)"
    $sudo mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge /etc/slurm /var/spool/slurmd \
        /var/spool/slurmctld /var/log/slurm
    $sudo test -s /etc/munge/munge.key || $sudo dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
    $sudo chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
    $sudo chmod 400 /etc/munge/munge.key
    pgrep -x munged >/dev/null || $sudo runuser -u munge -- munged || $sudo munged --force
    $sudo tee /etc/slurm/slurm.conf >/dev/null <<EOF
ClusterName=promptscope
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # No cgroup.conf: Debian's 22.05 has no "disabled" cgroup plugin, and without the file slurmd
    # runs with linuxproc tracking in a container.
    $sudo rm -f /etc/slurm/cgroup.conf
    pgrep -x slurmctld >/dev/null || $sudo slurmctld
    pgrep -x slurmd >/dev/null || $sudo slurmd
fi
for _ in $(seq 60); do
    sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' && break
    $sudo scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 1
done
sinfo -h -o %t | grep -qE '^(idle|mix|alloc)' || { log "the node did not come up:"; sinfo >&2; $sudo tail -20 /var/log/slurm/slurmd.log >&2; exit 4; }

# Data and model, then the sweep: 2 methods × 2 shots × 3 seeds = 12 tasks.
"$bin" synth-model --out "$work/m" >/dev/null
"$bin" synth-dataset --out "$work/d" --splits 4,2,3 --seed 5 >/dev/null 2>&1
plan() {
    mkdir -p "$1"
    "$bin" sweep plan --model "$work/m" --data "$work/d" --shots 1,2 --seeds 1,2,3 \
        --methods coop,tip-adapter --epochs 60 --n-ctx 4 "${@:2}" --out "$1/table.jsonl" 2>/dev/null
}
# The cluster's tasks share a feature cache that a features array fills first, slice by slice; the
# in-process run has none, so the tables' equality covers the features read back from the cache.
plan "$work/slurm" --cache "$work/slurm/cache"
plan "$work/local" --no-cache
tasks=$(wc -l < "$work/slurm/table.jsonl")
"$bin" sweep slurm --manifest "$work/slurm/table.jsonl" --cpus 1 --mem 400M --parallel "$cpus" \
    --bin "$bin" --out "$work/slurm/table.sbatch" 2>/dev/null
"$bin" sweep slurm --manifest "$work/slurm/table.jsonl" --cpus 1 --mem 400M --parallel "$cpus" \
    --bin "$bin" --features-slices 3 --out "$work/slurm/features.sbatch" 2>/dev/null

wait_array() {
    for _ in $(seq 900); do
        [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
        sleep 0.2
    done
    log "array $1 did not finish"; squeue >&2; return 1
}
t0=$(date +%s.%N)
features=$(sbatch --parsable "$work/slurm/features.sbatch")
job=$(sbatch --parsable --dependency="afterok:$features" "$work/slurm/table.sbatch")
# Cancel a CoOp task once it has written a checkpoint (mid-run, with epochs done), then let the rest
# finish; its resubmission resumes from that checkpoint.
cancelled=""
for _ in $(seq 1200); do
    ckpt=$(ls "$work/slurm/table.results/" 2>/dev/null | grep -m1 'prompts\.safetensors\.ckpt' || true)
    if [ -n "$ckpt" ]; then
        id=${ckpt%%.*}
        cancelled=$(grep -n "\"id\":\"$id\"" "$work/slurm/table.jsonl" | cut -d: -f1)
        cancelled=$((cancelled - 1))
        scancel "${job}_${cancelled}"
        break
    fi
    sleep 0.05
done
[ -n "$cancelled" ] || { log "no CoOp task of array $job was seen with a checkpoint"; exit 5; }
wait_array "$job"
# Every slice of the folder reached the cache before any task ran (afterok), each encoding its own.
encoded=$(cat "$work"/slurm/table.results/slurm-features-*.out 2>/dev/null | grep -c "encoded" || true)
if [ -f "$work/slurm/table.results/$(sed -n "$((cancelled + 1))p" "$work/slurm/table.jsonl" | sed 's/.*"id":"\([0-9a-f]*\)".*/\1/').json" ]; then
    log "task $cancelled finished before scancel reached it"
fi
# The collect before resubmitting must name the cancelled task.
missing=$("$bin" sweep collect --manifest "$work/slurm/table.jsonl" 2>&1 >/dev/null || true)
job2=$(sbatch --parsable --array="$cancelled" "$work/slurm/table.sbatch")
wait_array "$job2"
t1=$(date +%s.%N)
"$bin" sweep collect --manifest "$work/slurm/table.jsonl" --format json 2>/dev/null | tail -1 > "$work/slurm.json"

t2=$(date +%s.%N)
for i in $(seq 0 $((tasks - 1))); do
    "$bin" sweep run --manifest "$work/local/table.jsonl" --index "$i" 2>/dev/null
done
t3=$(date +%s.%N)
"$bin" sweep collect --manifest "$work/local/table.jsonl" --format json 2>/dev/null | tail -1 > "$work/local.json"

python3 - "$work" "$tasks" "$cancelled" "$t0" "$t1" "$t2" "$t3" "$missing" "$encoded" <<'EOF'
import json, sys
work, tasks, cancelled = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0, t1, t2, t3 = map(float, sys.argv[4:8])
slurm, local = open(f"{work}/slurm.json").read().strip(), open(f"{work}/local.json").read().strip()
print(json.dumps({
    "tasks": tasks, "cancelled_index": cancelled, "collect_before_resubmit": sys.argv[8].strip(),
    "feature_slices_done": int(sys.argv[9] or 0),
    "identical": slurm == local, "slurm_s": round(t1 - t0, 1), "sequential_s": round(t3 - t2, 1),
    "slurm": json.loads(slurm), "local": json.loads(local),
}))
EOF
