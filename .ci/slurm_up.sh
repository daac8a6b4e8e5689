#!/usr/bin/env bash
# Bring up a single-node SLURM cluster with accounting (slurmdbd + MariaDB) for the SLURM tests.
#
# Usage (as root, on Debian 12 / slurm-wlm 22.05, no systemd needed):
#   bash .ci/slurm_up.sh          # install what is missing, start what is not running,
#                                 # wait until the node is idle, print sinfo
#   bash .ci/slurm_up.sh --stop   # stop the daemons it starts (slurmd, slurmctld, slurmdbd,
#                                 # mariadbd, munged), by the pids in their pid files
#
# Idempotent: packages are installed only when missing, each daemon is started only when it is not
# already answering, config files are rewritten only when their content changes. Every wait is
# bounded (SLURM_UP_TIMEOUT seconds each, default 60); on failure the script names the step, prints
# the tail of that daemon's log and exits non-zero.
#
# Environment overrides:
#   SLURM_UP_CLUSTER   cluster name registered in the accounting database (default: ci)
#   SLURM_UP_PARTITION name of the single default partition (default: main; profiles/slurm uses it)
#   SLURM_UP_TIMEOUT   seconds to wait for each daemon (default: 60)
#
# Why accounting: snakemake-executor-plugin-slurm polls job status with `sacct`. Without a
# database sacct fails, the plugin drops the job and Snakemake waits forever without an error.
# See docs/CLUSTER.md.
set -euo pipefail

CLUSTER="${SLURM_UP_CLUSTER:-ci}"
PARTITION="${SLURM_UP_PARTITION:-main}"
TIMEOUT="${SLURM_UP_TIMEOUT:-60}"
DB_PASS="slurm-ci-only"   # local MariaDB bound to 127.0.0.1; a throwaway test cluster only

SLURM_ETC=/etc/slurm
SLURM_LOG=/var/log/slurm
RUN_SLURM=/run/slurm
MARIADB_LOG=/var/log/mariadbd-slurm.log

log() { printf '[slurm_up] %s\n' "$*" >&2; }

die() {
    # die MESSAGE [LOGFILE]: print the message, the tail of LOGFILE if given, and exit 1.
    log "ERROR: $1"
    if [[ $# -ge 2 && -f "$2" ]]; then
        log "last lines of $2:"
        tail -n 20 "$2" >&2 || true
    fi
    exit 1
}

wait_for() {
    # wait_for DESCRIPTION LOGFILE COMMAND...: poll COMMAND every 0.5 s for at most TIMEOUT s.
    local desc="$1" logfile="$2"
    shift 2
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "timed out after ${TIMEOUT}s waiting for ${desc}" "$logfile"
        fi
        sleep 0.5
    done
}

pid_alive() {
    # pid_alive PIDFILE: true when the file names a live process.
    local pidfile="$1" pid
    [[ -s "$pidfile" ]] || return 1
    pid=$(<"$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

write_if_changed() {
    # write_if_changed PATH OWNER MODE < content. Returns 0 when the file changed, 1 otherwise.
    local path="$1" owner="$2" mode="$3" tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        chown "$owner" "$path"
        chmod "$mode" "$path"
        return 1
    fi
    install -D -o "${owner%%:*}" -g "${owner##*:}" -m "$mode" "$tmp" "$path"
    rm -f "$tmp"
    log "wrote $path"
    return 0
}

port_open() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_closed() { ! port_open "$1"; }

ctld_up() { scontrol ping 2>/dev/null | grep -q UP; }

munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

node_ready() {
    # The node is usable when its state is idle, mixed or allocated (no drain/down flag).
    local state
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1)
    [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]]
}

stop_daemons() {
    # Stop, in reverse start order, the daemons whose pid files exist. Only pids from the pid
    # files this script's daemons write are signalled.
    local name pidfile pid
    for entry in slurmd:$RUN_SLURM/slurmd.pid slurmctld:$RUN_SLURM/slurmctld.pid \
        slurmdbd:$RUN_SLURM/slurmdbd.pid mariadbd:/run/mysqld/mysqld.pid \
        munged:/run/munge/munged.pid; do
        name="${entry%%:*}"
        pidfile="${entry#*:}"
        if pid_alive "$pidfile"; then
            pid=$(<"$pidfile")
            log "stopping $name (pid $pid)"
            kill "$pid" || true
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -0 "$pid" 2>/dev/null && log "WARNING: $name (pid $pid) still running"
        fi
    done
    return 0
}

[[ $EUID -eq 0 ]] ||
    die "must run as root (it installs packages and starts system daemons); try: sudo bash $0"

if [[ "${1:-}" == "--stop" ]]; then
    stop_daemons
    exit 0
elif [[ $# -gt 0 ]]; then
    die "unknown argument '$1' (usage: $0 [--stop])"
fi

# --- 1. Packages ------------------------------------------------------------------------------
need=()
for pair in slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client munged:munge \
    slurmdbd:slurmdbd mariadbd:mariadb-server; do
    prog="${pair%%:*}"
    command -v "$prog" >/dev/null 2>&1 || [[ -x "/usr/sbin/$prog" ]] || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    command -v apt-get >/dev/null ||
        die "missing ${need[*]} and no apt-get: install SLURM 22.05, munge, slurmdbd, MariaDB"
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${need[@]}" >&2 ||
        die "apt-get install ${need[*]} failed"
fi
export PATH="/usr/sbin:/usr/bin:$PATH"

NODE=$(hostname -s)
NCPU=$(nproc)
MEM_MB=$(($(free -m | awk '/^Mem:/{print $2}') - 1024))
((MEM_MB > 0)) || die "could not read the memory size from 'free -m'"

mkdir -p /run/munge /run/mysqld "$RUN_SLURM" "$SLURM_LOG" /var/spool/slurmctld /var/spool/slurmd
chown munge:munge /run/munge
chown mysql:mysql /run/mysqld
chown slurm:slurm "$RUN_SLURM" "$SLURM_LOG" /var/spool/slurmctld

# --- 2. munge ---------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    mungekey -c -f
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
if munge_ok; then
    log "munged already running"
else
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged || die "munged did not start" /var/log/munge/munged.log
    wait_for "munged to answer" /var/log/munge/munged.log munge_ok
fi

# --- 3. MariaDB + the slurm database user -----------------------------------------------------
if mysqladmin ping >/dev/null 2>&1; then
    log "mariadbd already running"
else
    [[ -d /var/lib/mysql/mysql ]] || {
        log "initialising the MariaDB data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >&2 ||
            die "mariadb-install-db failed"
    }
    log "starting mariadbd"
    # Small buffer pool: the accounting database of a test cluster is tiny.
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 \
        --pid-file=/run/mysqld/mysqld.pid --innodb-buffer-pool-size=32M \
        >>"$MARIADB_LOG" 2>&1 </dev/null &
    wait_for "mariadbd to answer 'mysqladmin ping'" "$MARIADB_LOG" mysqladmin ping
fi
mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
  ALTER USER 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" ||
    die "could not create the slurm database user in MariaDB" "$MARIADB_LOG"

# --- 4. Config files --------------------------------------------------------------------------
dbd_changed=0
write_if_changed "$SLURM_ETC/slurmdbd.conf" slurm:slurm 600 <<EOF && dbd_changed=1 || true
# Written by multibeta .ci/slurm_up.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
PidFile=$RUN_SLURM/slurmdbd.pid
LogFile=$SLURM_LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DB_PASS}
StorageLoc=slurm_acct_db
EOF

conf_changed=0
write_if_changed "$SLURM_ETC/slurm.conf" root:root 644 <<EOF && conf_changed=1 || true
# Written by multibeta .ci/slurm_up.sh: one node, one partition, accounting through slurmdbd.
ClusterName=${CLUSTER}
SlurmctldHost=${NODE}
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$RUN_SLURM/slurmctld.pid
SlurmdPidFile=$RUN_SLURM/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$SLURM_LOG/slurmctld.log
SlurmdLogFile=$SLURM_LOG/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# Keep finished jobs visible to squeue for 5 min (the plugin may fall back to squeue).
MinJobAge=300
KillWait=5
Waittime=0
NodeName=${NODE} CPUs=${NCPU} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF

# --- 5. slurmdbd + cluster registration -------------------------------------------------------
if pid_alive "$RUN_SLURM/slurmdbd.pid" && port_open 6819; then
    if ((dbd_changed)); then
        log "slurmdbd.conf changed: restarting slurmdbd"
        kill "$(<"$RUN_SLURM/slurmdbd.pid")"
        wait_for "the old slurmdbd to exit" "$SLURM_LOG/slurmdbd.log" port_closed 6819
        /usr/sbin/slurmdbd || die "slurmdbd did not start" "$SLURM_LOG/slurmdbd.log"
    else
        log "slurmdbd already running"
    fi
else
    log "starting slurmdbd"
    /usr/sbin/slurmdbd || die "slurmdbd did not start" "$SLURM_LOG/slurmdbd.log"
fi
wait_for "slurmdbd on port 6819" "$SLURM_LOG/slurmdbd.log" port_open 6819

if sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
    log "cluster '$CLUSTER' already registered"
else
    log "registering cluster '$CLUSTER' in the accounting database"
    sacctmgr -i add cluster "$CLUSTER" >&2 ||
        die "sacctmgr add cluster $CLUSTER failed" "$SLURM_LOG/slurmdbd.log"
fi

# --- 6. slurmctld + slurmd --------------------------------------------------------------------
if pid_alive "$RUN_SLURM/slurmctld.pid" && ctld_up; then
    if ((conf_changed)); then
        log "slurm.conf changed: scontrol reconfigure"
        scontrol reconfigure || die "scontrol reconfigure failed" "$SLURM_LOG/slurmctld.log"
    else
        log "slurmctld already running"
    fi
else
    log "starting slurmctld"
    /usr/sbin/slurmctld || die "slurmctld did not start" "$SLURM_LOG/slurmctld.log"
fi
wait_for "slurmctld to answer 'scontrol ping'" "$SLURM_LOG/slurmctld.log" ctld_up

if pid_alive "$RUN_SLURM/slurmd.pid"; then
    log "slurmd already running"
else
    log "starting slurmd"
    /usr/sbin/slurmd || die "slurmd did not start" "$SLURM_LOG/slurmd.log"
fi

# A node left drained or down by an earlier run (e.g. a killed slurmd) is put back in service.
state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)
if [[ "$state" =~ drain|down|fail ]]; then
    log "node $NODE is '$state': resuming it"
    scontrol update NodeName="$NODE" State=RESUME >&2 || true
fi
wait_for "node $NODE to become idle (sinfo)" "$SLURM_LOG/slurmd.log" node_ready

sinfo
log "SLURM cluster '$CLUSTER' is up: partition '$PARTITION', node $NODE ($NCPU CPUs, ${MEM_MB} MB)"
