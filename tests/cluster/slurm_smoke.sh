#!/usr/bin/env bash
# The smoke preset on a real one-node SLURM cluster, through the shipped profile (make test-slurm).
#
# As root on Debian: installs slurm-wlm and munge if missing, starts a private munged, slurmctld
# and slurmd (2 CPUs, 8000 MB, no accounting: the profile's documented squeue status path, with
# MinJobAge 600 s; finished jobs are recorded by jobcomp/filetxt), runs
#   snakemake --profile profiles/slurm --configfile presets/smoke.yaml --slurm-status-command squeue
# in a scratch directory, checks that every job except the local `all` ran as a SLURM job that
# completed (job ids from Snakemake's log against SLURM's job completion log), runs the same
# preset locally, compares the report tables byte for byte, and stops everything it started.
# Outside the scratch directory it changes only the apt packages and /etc/slurm/slurm.conf, a
# link to its own slurm.conf made for the run and removed after it (the SLURM executor plugin
# drops SLURM_* variables, SLURM_CONF included, from the jobs' environment, so the job steps'
# srun reads the system path). A host that already has /etc/slurm/slurm.conf is refused.
#
#   VENV=.venv tests/cluster/slurm_smoke.sh           # KEEP=1 keeps the scratch directory
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${VENV:-$REPO/.venv}
[ -d "$VENV" ] && VENV=$(cd "$VENV" && pwd)  # absolute: the runs happen in a scratch directory
SNAKEMAKE="$VENV/bin/snakemake"
CPUS=2
MEM_MB=8000

die() { echo "slurm_smoke: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it starts slurmctld, slurmd and munged)"
command -v apt-get >/dev/null || die "needs Debian/Ubuntu (apt-get)"
[ -x "$SNAKEMAKE" ] || die "no snakemake in $VENV (make env-slurm)"
"$VENV/bin/python" -c "import snakemake_executor_plugin_slurm" 2>/dev/null \
    || die "snakemake-executor-plugin-slurm is not installed in $VENV (make env-slurm)"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi

SYS_CONF=/etc/slurm/slurm.conf
[ -e "$SYS_CONF" ] && die "$SYS_CONF exists: this host has its own SLURM set-up, which this test leaves alone"

WORK=$(mktemp -d /tmp/speechmerge-slurm.XXXXXX)
chmod 700 "$WORK"
mkdir -p "$WORK"/{munge,state,spool,log,slurm-run,local-run}
PIDS=()
cleanup() {
    set +e
    if [ -n "${SLURM_CONF:-}" ] && [ -f "$SLURM_CONF" ]; then
        squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null
        for _ in $(seq 60); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
    fi
    for pidfile in "$WORK/slurmd.pid" "$WORK/slurmctld.pid" "$WORK/munge/munged.pid"; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done
    [ "$(readlink "$SYS_CONF" 2>/dev/null)" = "$WORK/slurm.conf" ] && rm -f "$SYS_CONF"
    if [ "${KEEP:-0}" = 1 ]; then echo "slurm_smoke: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Every table (csv, md, tex) of two runs byte for byte, except the three files that carry
# wall-clock training times (training.csv, training.md and README.md, which embeds training.md):
# training.csv is compared without its train_time_s and samples_per_s columns.
compare_tables() {
    local a=$1 b=$2 n=0 f
    for f in $(cd "$a" && find results/report -name '*.csv' -o -name '*.md' -o -name '*.tex' | sort); do
        case "$(basename "$f")" in
            README.md|training.md) continue ;;
            training.csv)
                "$VENV/bin/python" - "$a/$f" "$b/$f" <<'PY' || die "$f differs (timing columns aside)"
import csv, sys
timing = {"train_time_s", "samples_per_s"}
def rows(path):
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k not in timing} for r in csv.DictReader(fh)]
sys.exit(rows(sys.argv[1]) != rows(sys.argv[2]))
PY
                ;;
            *) cmp -s "$a/$f" "$b/$f" || die "$f differs between the SLURM and the local run" ;;
        esac
        n=$((n + 1))
    done
    [ "$n" -gt 0 ] || die "no tables to compare"
    echo "slurm_smoke: $n table files identical (byte for byte; training.csv without its timing columns)"
}

# --- munge: a private key and socket, so a system munged (if any) is left alone
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$WORK/munge/munge.key"
munged --force --key-file="$WORK/munge/munge.key" --socket="$WORK/munge/munge.socket" \
    --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/log/munged.log" \
    --seed-file="$WORK/munge/munged.seed"

# --- slurm.conf: one node, one partition, no accounting
HOST=$(hostname -s)
export SLURM_CONF="$WORK/slurm.conf"
cat > "$SLURM_CONF" <<EOF
ClusterName=speechmerge-smoke
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$WORK/munge/munge.socket
CryptoType=crypto/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$WORK/log/jobcomp.txt
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=smoke Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
mkdir -p /etc/slurm
ln -s "$SLURM_CONF" "$SYS_CONF"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 1
done
[ "$state" = idle ] || die "the node did not come up (sinfo: '$state'); see $WORK/log"
echo "slurm_smoke: one-node SLURM up ($(sinfo -h -o '%P %c CPUs %m MB %T'))"

# --- the smoke preset through the shipped profile
export SPEECHMERGE_SLURM_ACCOUNT="" SPEECHMERGE_SLURM_PARTITION=smoke
t0=$(date +%s)
(cd "$WORK/slurm-run" && "$SNAKEMAKE" --snakefile "$REPO/Snakefile" --profile "$REPO/profiles/slurm" \
    --configfile "$REPO/presets/smoke.yaml" --slurm-status-command squeue) > "$WORK/slurm-run.log" 2>&1 \
    || { tail -40 "$WORK/slurm-run.log"; die "the SLURM run failed (log: $WORK/slurm-run.log)"; }
t1=$(date +%s)

# --- every job but `all` was a SLURM job, and SLURM saw each of them complete
planned=$(awk '/^Job stats:/{f=1;next} f&&$1=="total"{print $2; exit}' "$WORK/slurm-run.log")
grep -oE "has been submitted with SLURM jobid [0-9]+" "$WORK/slurm-run.log" | awk '{print $NF}' | sort -u \
    > "$WORK/submitted.txt"
grep -oE "JobId=[0-9]+ .*JobState=[A-Z_]+" "$WORK/log/jobcomp.txt" \
    | sed -E 's/JobId=([0-9]+) .*JobState=([A-Z_]+).*/\1 \2/' | sort -u > "$WORK/completed.txt"
submitted=$(wc -l < "$WORK/submitted.txt")
completed=$(awk '$2=="COMPLETED"' "$WORK/completed.txt" | wc -l)
not_completed=$(join -v1 "$WORK/submitted.txt" <(awk '$2=="COMPLETED"{print $1}' "$WORK/completed.txt" | sort) | wc -l)
echo "slurm_smoke: $planned jobs planned, $submitted submitted to SLURM, $completed completed in SLURM's log, $((t1 - t0)) s"
[ -n "$planned" ] || die "no job count in the Snakemake log"
[ "$submitted" -eq $((planned - 1)) ] || die "$submitted SLURM jobs for $planned planned jobs (all but 'all' should be)"
[ "$not_completed" -eq 0 ] || die "$not_completed submitted jobs are not COMPLETED in $WORK/log/jobcomp.txt"

# --- the same preset locally, and the tables compared byte for byte
t2=$(date +%s)
(cd "$WORK/local-run" && "$SNAKEMAKE" --snakefile "$REPO/Snakefile" --cores "$CPUS" \
    --configfile "$REPO/presets/smoke.yaml") > "$WORK/local-run.log" 2>&1 \
    || { tail -40 "$WORK/local-run.log"; die "the local run failed"; }
t3=$(date +%s)
compare_tables "$WORK/local-run" "$WORK/slurm-run"
echo "slurm_smoke: local run $((t3 - t2)) s"
echo "slurm_smoke: OK"
