#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for the tests: munged, slurmctld and slurmd, all state in $2.
#   cluster.sh start DIR   -> writes the config, starts the daemons, waits until the node is idle
#   cluster.sh stop DIR    -> stops the daemons started by start and removes the config it wrote
# The config goes to /etc/slurm/slurm.conf, where job steps look for it (snakemake's SLURM plugin clears the
# SLURM_* variables, SLURM_CONF included, inside jobs); an existing config there that is not ours is refused.
set -euo pipefail
cmd=$1
dir=$(realpath -m "$2")
conf=/etc/slurm/slurm.conf
marker="# rlseg test cluster"
if [ "$cmd" = stop ]; then
  for pid in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  sleep 1
  if [ -f "$conf" ] && head -1 "$conf" | grep -q "$marker"; then rm -f "$conf"; fi
  exit 0
fi
if [ -f "$conf" ] && ! head -1 "$conf" | grep -q "$marker"; then
  echo "refusing to replace an existing $conf" >&2
  exit 3
fi
mkdir -p /etc/slurm
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$conf" <<CONF
$marker ($dir)
ClusterName=rlsegtest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=300
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=26817
SlurmdPort=26818
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
key="$dir/munge/munge.key"
[ -f "$key" ] || { dd if=/dev/urandom bs=1 count=1024 of="$key" 2>/dev/null; chmod 400 "$key"; }
munged --force --key-file="$key" --socket="$dir/munge/munge.socket" --pid-file="$dir/munged.pid" \
  --log-file="$dir/munged.log" --seed-file="$dir/munge/seed"
slurmctld -f "$conf"
slurmd -f "$conf"
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^idle'; then exit 0; fi
  sleep 1
done
echo "slurm node did not come up; see $dir/*.log" >&2
exit 1
