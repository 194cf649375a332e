# shellcheck shell=bash
# deploy/local/lib.sh: shared helpers of the deploy/local scripts. Source it, do not run it.
#
# Everything binds to 127.0.0.1. State lives under $RUM_LOCAL_DIR (default <repo>/.local, git-ignored):
#   $RUM_LOCAL_DIR/run/NAME.pid   pid of a process started here (NAME.exe: its executable and start time, to detect
#                                 reused pids)
#   $RUM_LOCAL_DIR/log/NAME.log   its stdout and stderr
#   $RUM_LOCAL_DIR/data/NAME/     its data and generated config
# Processes are stopped by the pid they were started with, never by name.

if [[ -n "${RUM_LOCAL_LIB_LOADED:-}" ]]; then
    return 0
fi
RUM_LOCAL_LIB_LOADED=1

RUM_LOCAL_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$RUM_LOCAL_LIB_DIR/../.." && pwd)"
RUM_SCRIPT_NAME="${RUM_SCRIPT_NAME:-$(basename "$0")}"

# ---------------------------------------------------------------------------------------------------------------------
# Logging

log() { printf '[rum %s] %s\n' "$RUM_SCRIPT_NAME" "$*" >&2; }
warn() { printf '[rum %s] warning: %s\n' "$RUM_SCRIPT_NAME" "$*" >&2; }
die() {
    printf '[rum %s] error: %s\n' "$RUM_SCRIPT_NAME" "$*" >&2
    exit 1
}

# show_log_tail FILE [LINES]: the last lines of a log file, indented, on stderr.
show_log_tail() {
    local file=$1 lines=${2:-25}
    if [[ -s $file ]]; then
        printf '    --- last %s lines of %s ---\n' "$lines" "$file" >&2
        tail -n "$lines" "$file" | sed 's/^/    | /' >&2
    else
        printf '    (%s is empty or missing)\n' "$file" >&2
    fi
}

# ---------------------------------------------------------------------------------------------------------------------
# Configuration: deploy/local/stack.env, then environment variables with defaults

# load_stack_env FILE: the KEY=VALUE lines of FILE as shell variables; a variable already set in the environment wins.
load_stack_env() {
    local file=$1 line n=0
    [[ -r $file ]] || die "$file is missing"
    while IFS= read -r line || [[ -n $line ]]; do
        n=$((n + 1))
        [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
        [[ $line =~ ^(RUM_[A-Z0-9_]+)=([^[:space:]]*)$ ]] || die "$file:$n: not a RUM_KEY=value line: $line"
        if [[ -z ${!BASH_REMATCH[1]:-} ]]; then
            printf -v "${BASH_REMATCH[1]}" '%s' "${BASH_REMATCH[2]}"
        fi
    done <"$file"
}
load_stack_env "$RUM_LOCAL_LIB_DIR/stack.env"
for _var in RUM_KAFKA_VERSION RUM_KAFKA_LOG4J_VERSION; do
    [[ ${!_var:-} =~ ^[0-9]+(\.[0-9]+)*$ ]] || die "$_var='${!_var:-}' is not a version (set in $RUM_LOCAL_LIB_DIR/stack.env)"
done
for _var in RUM_KAFKA_TOPIC RUM_KAFKA_DLQ_TOPIC; do
    [[ ${!_var:-} =~ ^[A-Za-z0-9._-]+$ ]] || die "$_var='${!_var:-}' is not a Kafka topic name ([A-Za-z0-9._-])"
done
for _var in RUM_KAFKA_TOPIC_PARTITIONS RUM_KAFKA_DLQ_TOPIC_PARTITIONS; do
    [[ ${!_var:-} =~ ^[1-9][0-9]*$ ]] || die "$_var='${!_var:-}' is not a number of partitions"
done
# Where the Kafka jars are fetched (lib/ inside): outside the checkout, so a fresh clone (CI) reuses them.
RUM_LOCAL_KAFKA_HOME="${RUM_LOCAL_KAFKA_HOME:-$HOME/.cache/rum/kafka-$RUM_KAFKA_VERSION}"
# rum reads every RUM_KAFKA_* variable of its environment as a key of [kafka] and refuses unknown ones: the
# processes these scripts start must not inherit stack.env's names (rum ignores RUM_LOCAL_*, the scripts' own).
export -n RUM_KAFKA_VERSION RUM_KAFKA_LOG4J_VERSION RUM_KAFKA_TOPIC_PARTITIONS RUM_KAFKA_DLQ_TOPIC_PARTITIONS

RUM_LOCAL_DIR="${RUM_LOCAL_DIR:-$REPO/.local}"
if [[ $RUM_LOCAL_DIR != /* ]]; then
    RUM_LOCAL_DIR="$PWD/$RUM_LOCAL_DIR"
fi
RUM_INGEST_PORT="${RUM_INGEST_PORT:-8080}"
RUM_CONSUMER_PORT="${RUM_CONSUMER_PORT:-8081}"
# Kafka, one broker (`up --kafka kafka`): its client port and its KRaft controller port.
RUM_LOCAL_KAFKA_PORT="${RUM_LOCAL_KAFKA_PORT:-9092}"
RUM_LOCAL_KAFKA_CONTROLLER_PORT="${RUM_LOCAL_KAFKA_CONTROLLER_PORT:-19092}"
# Kafka, the three-broker cluster (`up --kafka cluster`): brokers kafka-1, kafka-2, kafka-3.
RUM_LOCAL_KAFKA_PORT_1="${RUM_LOCAL_KAFKA_PORT_1:-9092}"
RUM_LOCAL_KAFKA_PORT_2="${RUM_LOCAL_KAFKA_PORT_2:-9093}"
RUM_LOCAL_KAFKA_PORT_3="${RUM_LOCAL_KAFKA_PORT_3:-9094}"
RUM_LOCAL_KAFKA_CONTROLLER_PORT_1="${RUM_LOCAL_KAFKA_CONTROLLER_PORT_1:-19092}"
RUM_LOCAL_KAFKA_CONTROLLER_PORT_2="${RUM_LOCAL_KAFKA_CONTROLLER_PORT_2:-19093}"
RUM_LOCAL_KAFKA_CONTROLLER_PORT_3="${RUM_LOCAL_KAFKA_CONTROLLER_PORT_3:-19094}"
# Each broker's JVM heap, in MiB.
RUM_LOCAL_KAFKA_HEAP_MB="${RUM_LOCAL_KAFKA_HEAP_MB:-384}"
RUM_LOCAL_CLICKHOUSE_PORT="${RUM_LOCAL_CLICKHOUSE_PORT:-8123}"
RUM_LOCAL_CLICKHOUSE_TCP_PORT="${RUM_LOCAL_CLICKHOUSE_TCP_PORT:-9000}"
# The ClickHouse cluster (`up --clickhouse cluster`, deploy/local/clickhouse-cluster.sh): ZooKeeper and the servers
# clickhouse-1..4 (shard 01 replicas s01r1 s01r2, shard 02 replicas s02r1 s02r2): HTTP, native and interserver ports.
RUM_LOCAL_ZOOKEEPER_PORT="${RUM_LOCAL_ZOOKEEPER_PORT:-2181}"
RUM_LOCAL_CLICKHOUSE_PORT_1="${RUM_LOCAL_CLICKHOUSE_PORT_1:-8124}"
RUM_LOCAL_CLICKHOUSE_PORT_2="${RUM_LOCAL_CLICKHOUSE_PORT_2:-8125}"
RUM_LOCAL_CLICKHOUSE_PORT_3="${RUM_LOCAL_CLICKHOUSE_PORT_3:-8126}"
RUM_LOCAL_CLICKHOUSE_PORT_4="${RUM_LOCAL_CLICKHOUSE_PORT_4:-8127}"
RUM_LOCAL_CLICKHOUSE_TCP_PORT_1="${RUM_LOCAL_CLICKHOUSE_TCP_PORT_1:-9001}"
RUM_LOCAL_CLICKHOUSE_TCP_PORT_2="${RUM_LOCAL_CLICKHOUSE_TCP_PORT_2:-9002}"
RUM_LOCAL_CLICKHOUSE_TCP_PORT_3="${RUM_LOCAL_CLICKHOUSE_TCP_PORT_3:-9003}"
RUM_LOCAL_CLICKHOUSE_TCP_PORT_4="${RUM_LOCAL_CLICKHOUSE_TCP_PORT_4:-9004}"
RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_1="${RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_1:-9011}"
RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_2="${RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_2:-9012}"
RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_3="${RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_3:-9013}"
RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_4="${RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_4:-9014}"
RUM_LOCAL_PROMETHEUS_PORT="${RUM_LOCAL_PROMETHEUS_PORT:-9090}"
# Not Alertmanager's usual 9093: that is kafka-2's client port in the three-broker cluster.
RUM_LOCAL_ALERTMANAGER_PORT="${RUM_LOCAL_ALERTMANAGER_PORT:-9095}"
# Seconds to wait for a service to become ready; Kafka gets longer (three JVMs on two cores take tens of seconds).
RUM_LOCAL_START_TIMEOUT="${RUM_LOCAL_START_TIMEOUT:-60}"
RUM_LOCAL_KAFKA_START_TIMEOUT="${RUM_LOCAL_KAFKA_START_TIMEOUT:-180}"

RUM_LOCAL_CLICKHOUSE_BIN="${RUM_LOCAL_CLICKHOUSE_BIN:-/usr/sbin/clickhouse-server}"

# The services this folder manages, in start order. `kafka` is the local Kafka of the mode `up` chose: one broker,
# or the three brokers kafka-1, kafka-2 and kafka-3 (RUM_KAFKA_CLUSTER), each also a service of its own.
RUM_SERVICES=(clickhouse kafka alertmanager prometheus)
RUM_KAFKA_CLUSTER=(kafka-1 kafka-2 kafka-3)
# Likewise `clickhouse` is one server, or (`up --clickhouse cluster`) zookeeper and the servers clickhouse-1..4.
RUM_LOCAL_CLICKHOUSE_NODES=(clickhouse-1 clickhouse-2 clickhouse-3 clickhouse-4)
# The pipeline processes started by ./up.
# shellcheck disable=SC2034 # used by the scripts that source this file
RUM_PIPELINE=(standalone ingest consume alerts)

RUM_LOCAL_PORT_VARS=(RUM_INGEST_PORT RUM_CONSUMER_PORT RUM_LOCAL_KAFKA_PORT RUM_LOCAL_KAFKA_CONTROLLER_PORT
    RUM_LOCAL_KAFKA_PORT_1 RUM_LOCAL_KAFKA_PORT_2 RUM_LOCAL_KAFKA_PORT_3 RUM_LOCAL_KAFKA_CONTROLLER_PORT_1
    RUM_LOCAL_KAFKA_CONTROLLER_PORT_2 RUM_LOCAL_KAFKA_CONTROLLER_PORT_3 RUM_LOCAL_CLICKHOUSE_PORT
    RUM_LOCAL_CLICKHOUSE_TCP_PORT RUM_LOCAL_PROMETHEUS_PORT RUM_LOCAL_ALERTMANAGER_PORT RUM_LOCAL_ZOOKEEPER_PORT
    RUM_LOCAL_CLICKHOUSE_PORT_1 RUM_LOCAL_CLICKHOUSE_PORT_2 RUM_LOCAL_CLICKHOUSE_PORT_3 RUM_LOCAL_CLICKHOUSE_PORT_4
    RUM_LOCAL_CLICKHOUSE_TCP_PORT_1 RUM_LOCAL_CLICKHOUSE_TCP_PORT_2 RUM_LOCAL_CLICKHOUSE_TCP_PORT_3
    RUM_LOCAL_CLICKHOUSE_TCP_PORT_4 RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_1 RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_2
    RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_3 RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_4)
for _var in "${RUM_LOCAL_PORT_VARS[@]}"; do
    if ! [[ ${!_var} =~ ^[0-9]+$ ]] || ((${!_var} < 1 || ${!_var} > 65535)); then
        die "$_var='${!_var}' is not a port number (1-65535)"
    fi
done
for _var in RUM_LOCAL_START_TIMEOUT RUM_LOCAL_KAFKA_START_TIMEOUT; do
    [[ ${!_var} =~ ^[1-9][0-9]*$ ]] || die "$_var='${!_var}' is not a number of seconds"
done
if ! [[ $RUM_LOCAL_KAFKA_HEAP_MB =~ ^[1-9][0-9]*$ ]] || ((RUM_LOCAL_KAFKA_HEAP_MB < 128)); then
    die "RUM_LOCAL_KAFKA_HEAP_MB='$RUM_LOCAL_KAFKA_HEAP_MB' is not a heap size in MiB (128 or more)"
fi
unset _var

export RUM_LOCAL_DIR "${RUM_LOCAL_PORT_VARS[@]}"

# Cargo's target dir (the pipeline binary lives there).
rum_target_dir() {
    local dir=${CARGO_TARGET_DIR:-target}
    if [[ $dir != /* ]]; then
        dir="$REPO/$dir"
    fi
    printf '%s\n' "$dir"
}
# shellcheck disable=SC2034 # used by the scripts that source this file
RUM_BIN="$(rum_target_dir)/release/rum"

pid_file() { printf '%s/run/%s.pid\n' "$RUM_LOCAL_DIR" "$1"; }
exe_file() { printf '%s/run/%s.exe\n' "$RUM_LOCAL_DIR" "$1"; }
log_file() { printf '%s/log/%s.log\n' "$RUM_LOCAL_DIR" "$1"; }
data_dir() { printf '%s/data/%s\n' "$RUM_LOCAL_DIR" "$1"; }

# ---------------------------------------------------------------------------------------------------------------------
# Installation

# as_root CMD...: run a command as root (directly, or through sudo).
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' and sudo is not installed"
    fi
}

# apt_missing PKG...: print the packages that are not installed, one a line.
apt_missing() {
    local pkg
    for pkg in "$@"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
            printf '%s\n' "$pkg"
        fi
    done
}

RUM_APT_UPDATED=""

apt_update_once() {
    if [[ -z $RUM_APT_UPDATED ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
        RUM_APT_UPDATED=1
    fi
}

# apt_ensure [--no-install-recommends] PKG...: install the packages that are missing (apt-get update once).
apt_ensure() {
    local opts=()
    if [[ ${1:-} == --no-install-recommends ]]; then
        opts+=("$1")
        shift
    fi
    local missing=()
    mapfile -t missing < <(apt_missing "$@")
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages: ${missing[*]}; this script installs with apt-get (Debian/Ubuntu), install them by hand"
    apt_update_once
    log "installing apt packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${opts[@]}" "${missing[@]}" ||
        die "apt-get install ${missing[*]} failed"
}

# apt_ensure_servers [--no-install-recommends] PKG...: like apt_ensure, for packages that ship a system service.
# The package's own service must not start (it would take the ports these scripts use): install under a
# policy-rc.d that refuses starts, then disable the units the install enabled.
apt_ensure_servers() {
    local opts=() missing=()
    if [[ ${1:-} == --no-install-recommends ]]; then
        opts+=("$1")
        shift
    fi
    mapfile -t missing < <(apt_missing "$@")
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages: ${missing[*]}; this script installs with apt-get (Debian/Ubuntu), install them by hand"
    apt_update_once
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# temporary, written by rum deploy/local/lib.sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        made_policy=1
    fi
    local rc=0
    # A subshell, so that the policy file is removed even when the install dies.
    (apt_ensure "${opts[@]}" "${missing[@]}") || rc=$?
    if [[ -n $made_policy ]]; then
        as_root rm -f "$policy"
    fi
    ((rc == 0)) || exit "$rc"
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        local pkg unit
        for pkg in "${missing[@]}"; do
            unit="$pkg.service"
            if systemctl list-unit-files "$unit" >/dev/null 2>&1 && systemctl is-enabled --quiet "$unit" 2>/dev/null; then
                log "disabling the system service $unit (deploy/local runs its own instance on loopback)"
                as_root systemctl disable --now --quiet "$unit" || warn "could not disable $unit"
            fi
        done
    fi
}

# ensure_cargo: a Rust toolchain must exist (this script does not install one).
ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
        PATH="$HOME/.cargo/bin:$PATH"
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install a Rust toolchain (https://rustup.rs, rust-version 1.89 or newer), then run this again"
}

RUM_BUILD_PACKAGES=(build-essential pkg-config libssl-dev zlib1g-dev cmake curl openssl iproute2 jq python3 python3-venv)
RUM_SERVER_PACKAGES=(clickhouse-server clickhouse-client)
RUM_MONITORING_PACKAGES=(prometheus prometheus-alertmanager)
# ZooKeeper for the ClickHouse cluster: the jars only (the `zookeeper` package adds nothing a server needs here, and
# pulls a full JRE); libslf4j-java (a dependency) brings slf4j-simple, its logging.
RUM_ZOOKEEPER_PACKAGES=(libzookeeper-java libslf4j-java)

# rum_install: everything the stack and the tests need: apt packages, Java 17 and Maven, Apache Kafka's jars,
# ZooKeeper's jars.
rum_install() {
    apt_ensure "${RUM_BUILD_PACKAGES[@]}"
    apt_ensure_servers "${RUM_SERVER_PACKAGES[@]}"
    apt_ensure_servers --no-install-recommends "${RUM_MONITORING_PACKAGES[@]}"
    ensure_java
    # After Java 17: its headless JRE then satisfies ZooKeeper's dependency on one.
    apt_ensure --no-install-recommends "${RUM_ZOOKEEPER_PACKAGES[@]}"
    zookeeper_classpath >/dev/null
    ensure_cargo
    [[ -x $RUM_LOCAL_CLICKHOUSE_BIN ]] ||
        die "clickhouse-server not found at $RUM_LOCAL_CLICKHOUSE_BIN (RUM_LOCAL_CLICKHOUSE_BIN)"
    ensure_kafka
}

# ---------------------------------------------------------------------------------------------------------------------
# Processes (started in their own session, tracked by pid file)

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
    local pid=$1 stat rest
    [[ -r /proc/$pid/stat ]] || return 1
    { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
    rest=${stat##*) }
    case ${rest%% *} in
    Z | X) return 1 ;;
    esac
    return 0
}

# argv_runs PID PATH: PATH is the program or the script (argv[1], behind an interpreter) of the process.
argv_runs() {
    local pid=$1 path=$2 argv=() arg
    { mapfile -d "" -t -n 2 argv <"/proc/$pid/cmdline"; } 2>/dev/null || return 1
    for arg in "${argv[@]}"; do
        if [[ $arg == /* && $(readlink -f "$arg" 2>/dev/null) == "$path" ]]; then
            return 0
        fi
    done
    return 1
}

# proc_start_time PID: when the process started (clock ticks since boot, field 22 of /proc/PID/stat).
proc_start_time() {
    local stat fields
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    read -r -a fields <<<"${stat##*) }"
    printf '%s\n' "${fields[19]}"
}

# proc_pid NAME: print the pid of the running process NAME; a stale pid file is removed (returns 1).
# run/NAME.exe holds the executable and the start time of the process: a pid reused by another process with the
# same executable (every JVM is /usr/lib/jvm/.../java) has another start time.
proc_pid() {
    local name=$1 pf ef pid expected="" started="" actual
    pf=$(pid_file "$name")
    ef=$(exe_file "$name")
    [[ -f $pf ]] || return 1
    pid=$(<"$pf")
    local why="pid ${pid:-?} is not running"
    if [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid"; then
        if [[ -f $ef ]]; then
            { read -r expected && read -r started; } <"$ef" || true
        fi
        actual=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
        actual=${actual% (deleted)}
        if [[ -n $started && $(proc_start_time "$pid" || true) != "$started" ]]; then
            why="pid $pid was reused by a process started later"
        # Same executable (or unknown): it is ours. Otherwise the pid was reused by an unrelated process.
        elif [[ -z $expected || -z $actual || $expected == "$actual" ]] || argv_runs "$pid" "$expected"; then
            printf '%s\n' "$pid"
            return 0
        else
            why="pid $pid is now $actual, not $expected"
        fi
    fi
    log "$name: removing stale pid file $pf ($why)"
    rm -f "$pf" "$ef"
    return 1
}

# start_process NAME CWD [VAR=VALUE...] CMD [ARGS...]: start CMD (with the variables in its environment) in the
# background in its own session, stdin from /dev/null, stdout and stderr appended to log/NAME.log, pid in
# run/NAME.pid and in STARTED_PID.
start_process() {
    local name=$1 cwd=$2
    shift 2
    local envs=()
    while (($#)) && [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do
        envs+=("$1")
        shift
    done
    (($#)) || die "start_process $name: no command"
    local path
    path=$(command -v "$1") || die "$name: command not found: $1"
    path=$(readlink -f "$path")
    mkdir -p "$RUM_LOCAL_DIR/run" "$RUM_LOCAL_DIR/log" "$cwd"
    local lf
    lf=$(log_file "$name")
    printf '\n=== %s: starting %s (from %s)\n' "$(date -u +%FT%TZ)" "$*" "$RUM_SCRIPT_NAME" >>"$lf"
    # setsid: a Ctrl-C in the terminal that ran this script must not reach the service. env and setsid exec the
    # command in the same process, so the pid is the command's.
    (cd "$cwd" && exec env "${envs[@]}" setsid "$@" >>"$lf" 2>&1 </dev/null) &
    STARTED_PID=$!
    printf '%s\n' "$STARTED_PID" >"$(pid_file "$name")"
    printf '%s\n%s\n' "$path" "$(proc_start_time "$STARTED_PID" || true)" >"$(exe_file "$name")"
    log "$name: started (pid $STARTED_PID), log: $lf"
}

# stop_processes TIMEOUT NAME...: SIGTERM to each at once, wait up to TIMEOUT seconds for all, then SIGKILL the
# rest; remove their pid files. (At once: the brokers of a cluster shut down together, not one by one.)
stop_processes() {
    local timeout=$1 name pid
    shift
    local names=() pids=()
    for name in "$@"; do
        if pid=$(proc_pid "$name"); then
            log "$name: stopping (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            names+=("$name")
            pids+=("$pid")
        fi
    done
    local i deadline=$((SECONDS + timeout)) killed=""
    for i in "${!pids[@]}"; do
        while pid_alive "${pids[i]}"; do
            if ((SECONDS >= deadline)) && [[ -z $killed ]]; then
                killed=1
                local j
                for j in "${!pids[@]}"; do
                    if pid_alive "${pids[j]}"; then
                        warn "${names[j]}: still running ${timeout} s after SIGTERM, sending SIGKILL"
                        kill -KILL "${pids[j]}" 2>/dev/null || true
                    fi
                done
                deadline=$((SECONDS + 5))
            elif ((SECONDS >= deadline)); then
                die "${names[i]}: pid ${pids[i]} survived SIGKILL"
            fi
            sleep 0.1
        done
        rm -f "$(pid_file "${names[i]}")" "$(exe_file "${names[i]}")"
        log "${names[i]}: stopped"
    done
}

# stop_process NAME [TIMEOUT]: SIGTERM, wait up to TIMEOUT seconds (default 10), then SIGKILL; remove the pid file.
stop_process() { stop_processes "${2:-10}" "$1"; }

# kill_process NAME: SIGKILL (a crash, on purpose), wait until it is gone; remove the pid file.
kill_process() {
    local name=$1 pid deadline
    if ! pid=$(proc_pid "$name"); then
        log "$name: not running"
        return 0
    fi
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    while pid_alive "$pid"; do
        ((SECONDS < deadline)) || die "$name: pid $pid survived SIGKILL"
        sleep 0.1
    done
    rm -f "$(pid_file "$name")" "$(exe_file "$name")"
    log "$name: killed (SIGKILL to pid $pid)"
}

# port_listener PORT: print the listening sockets on PORT (empty when the port is free).
port_listener() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        ss -ltnpH "sport = :$port" 2>/dev/null || true
    elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        printf 'something answers on 127.0.0.1:%s\n' "$port"
    fi
}

# require_port_free NAME PORT VAR: die with a clear message when PORT is taken.
require_port_free() {
    local name=$1 port=$2 var=$3 holder
    holder=$(port_listener "$port")
    if [[ -n $holder ]]; then
        die "$name: port $port is already in use ($(printf '%s' "$holder" | head -n 1 | tr -s ' ')); stop that process or choose another port with $var=..."
    fi
}

# wait_ready NAME WHAT EXTRA_LOG CHECK...: run CHECK until it succeeds; die (pointing at log/NAME.log and, when not
# empty, EXTRA_LOG) when the process exits or RUM_LOCAL_START_TIMEOUT seconds pass since it was started (a process
# that timed out is stopped).
wait_ready() {
    local name=$1 what=$2 extra=$3
    shift 3
    local lf
    lf=$(log_file "$name")
    if [[ -n $extra ]]; then
        lf="$lf and $extra"
    fi
    local pf started deadline pid
    pf=$(pid_file "$name")
    [[ -f $pf ]] || die "$name is not running (no $pf)"
    pid=$(<"$pf")
    started=$(stat -c %Y "$pf")
    deadline=$((started + RUM_LOCAL_START_TIMEOUT))
    while ! "$@" >/dev/null 2>&1; do
        if ! pid_alive "$pid"; then
            rm -f "$pf" "$(exe_file "$name")"
            show_log_tail "$(log_file "$name")"
            [[ -z $extra ]] || show_log_tail "$extra"
            die "$name exited during startup (waiting for $what); see $lf"
        fi
        if (($(date +%s) >= deadline)); then
            show_log_tail "$(log_file "$name")"
            [[ -z $extra ]] || show_log_tail "$extra"
            stop_process "$name" 5 || true
            die "$name was not ready within ${RUM_LOCAL_START_TIMEOUT} s (waiting for $what); see $lf"
        fi
        sleep 0.1
    done
}

# http_ok URL [BODY]: URL answers 2xx (and, when given, exactly BODY modulo the trailing newline).
http_ok() {
    local url=$1 expect=${2:-} body
    body=$(curl -fsS --max-time 2 "$url") || return 1
    [[ -z $expect || $body == "$expect" ]]
}

# tcp_open PORT: something accepts connections on 127.0.0.1:PORT.
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: a loopback port that is free now (for processes of the benchmark; the stack's ports come from env).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------------------------------------
# Services: kafka (Apache Kafka, deploy/local/kafka.sh), clickhouse, prometheus, alertmanager

# shellcheck source=deploy/local/kafka.sh
source "$RUM_LOCAL_LIB_DIR/kafka.sh"
# shellcheck source=deploy/local/clickhouse-cluster.sh
source "$RUM_LOCAL_LIB_DIR/clickhouse-cluster.sh"

# is_service NAME: a service of this folder (the brokers of the cluster count too).
is_service() {
    local s
    for s in "${RUM_SERVICES[@]}" "${RUM_KAFKA_CLUSTER[@]}" zookeeper "${RUM_LOCAL_CLICKHOUSE_NODES[@]}"; do
        [[ $s == "$1" ]] && return 0
    done
    return 1
}

# service_url NAME: where the service answers.
service_url() {
    case $1 in
    kafka | kafka-[123]) printf '127.0.0.1:%s (controller :%s)\n' "$(kafka_port "$1")" "$(kafka_controller_port "$1")" ;;
    clickhouse) printf 'http://127.0.0.1:%s (native tcp :%s)\n' "$RUM_LOCAL_CLICKHOUSE_PORT" "$RUM_LOCAL_CLICKHOUSE_TCP_PORT" ;;
    clickhouse-[1234]) clickhouse_node_url "$1" ;;
    zookeeper) printf '127.0.0.1:%s\n' "$RUM_LOCAL_ZOOKEEPER_PORT" ;;
    prometheus) printf 'http://127.0.0.1:%s\n' "$RUM_LOCAL_PROMETHEUS_PORT" ;;
    alertmanager) printf 'http://127.0.0.1:%s\n' "$RUM_LOCAL_ALERTMANAGER_PORT" ;;
    standalone | ingest) printf 'http://127.0.0.1:%s\n' "$RUM_INGEST_PORT" ;;
    consume) printf 'http://127.0.0.1:%s/metrics\n' "$RUM_CONSUMER_PORT" ;;
    alerts) printf 'http://127.0.0.1:%s/metrics\n' "${RUM_ALERTS_PORT:-8082}" ;;
    *) printf '\n' ;;
    esac
}

# render_clickhouse_config DIR HTTP_PORT TCP_PORT: write DIR/config.xml and DIR/users.xml from the templates in
# deploy/local/clickhouse/ (the rum-testkit crate renders the same files the same way).
render_clickhouse_config() {
    local dir=$1 http=$2 tcp=$3 tpl
    [[ $dir != *[\&\<\>\"\']* ]] || die "clickhouse: the data dir '$dir' contains XML special characters"
    tpl=$(<"$RUM_LOCAL_LIB_DIR/clickhouse/config.xml.in")
    tpl=${tpl//@DATA_DIR@/"$dir"}
    tpl=${tpl//@HTTP_PORT@/"$http"}
    tpl=${tpl//@TCP_PORT@/"$tcp"}
    if [[ $tpl =~ @[A-Z_]+@ ]]; then
        die "clickhouse: unknown placeholder ${BASH_REMATCH[0]} in $RUM_LOCAL_LIB_DIR/clickhouse/config.xml.in"
    fi
    mkdir -p "$dir/log" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
    printf '%s\n' "$tpl" >"$dir/config.xml"
    cp "$RUM_LOCAL_LIB_DIR/clickhouse/users.xml" "$dir/users.xml"
}

clickhouse_start() {
    if proc_pid clickhouse >/dev/null; then
        log "clickhouse: already running (pid $(proc_pid clickhouse))"
        return 0
    fi
    [[ -x $RUM_LOCAL_CLICKHOUSE_BIN ]] ||
        die "clickhouse: $RUM_LOCAL_CLICKHOUSE_BIN not found; run ./deploy/local/install"
    require_port_free clickhouse "$RUM_LOCAL_CLICKHOUSE_PORT" RUM_LOCAL_CLICKHOUSE_PORT
    require_port_free clickhouse "$RUM_LOCAL_CLICKHOUSE_TCP_PORT" RUM_LOCAL_CLICKHOUSE_TCP_PORT
    local dir
    dir=$(data_dir clickhouse)
    render_clickhouse_config "$dir" "$RUM_LOCAL_CLICKHOUSE_PORT" "$RUM_LOCAL_CLICKHOUSE_TCP_PORT"
    start_process clickhouse "$dir" "$RUM_LOCAL_CLICKHOUSE_BIN" --config-file="$dir/config.xml"
    # The server's own log (errors included) is in the data dir; stdout only says where it logs.
    wait_ready clickhouse "GET /ping" "$dir/log/clickhouse-server.err.log" \
        http_ok "http://127.0.0.1:$RUM_LOCAL_CLICKHOUSE_PORT/ping" "Ok."
    log "clickhouse: ready at http://127.0.0.1:$RUM_LOCAL_CLICKHOUSE_PORT (native tcp port $RUM_LOCAL_CLICKHOUSE_TCP_PORT)"
}

# yaml_quote STRING: a single-quoted YAML scalar.
yaml_quote() { printf "'%s'" "${1//\'/\'\'}"; }

# prometheus_rule_files: every Prometheus rule file of the repository (alerts/prometheus/*_rules.yml; their promtool
# tests are *_rules_test.yml), one a line.
prometheus_rule_files() {
    local file
    for file in "$REPO"/alerts/prometheus/*_rules.yml; do
        [[ -f $file ]] && printf '%s\n' "$file"
    done
    return 0
}

# render_prometheus_config FILE: scrape the pipeline (ingest, consumer, evaluator; `rum standalone` serves the first
# two ports), evaluate every rule file, send alerts to the local Alertmanager.
render_prometheus_config() {
    local file=$1 rules=()
    mapfile -t rules < <(prometheus_rule_files)
    {
        printf '# Generated by deploy/local/lib.sh at every start; edits here are overwritten.\n'
        printf 'global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n'
        printf 'alerting:\n  alertmanagers:\n    - static_configs:\n'
        printf "        - targets: ['127.0.0.1:%s']\n" "$RUM_LOCAL_ALERTMANAGER_PORT"
        if ((${#rules[@]})); then
            printf 'rule_files:\n'
            local rule
            for rule in "${rules[@]}"; do
                printf '  - %s\n' "$(yaml_quote "$rule")"
            done
        fi
        printf 'scrape_configs:\n'
        printf "  - job_name: rum-ingest\n    static_configs:\n      - targets: ['127.0.0.1:%s']\n" "$RUM_INGEST_PORT"
        printf "  - job_name: rum-consume\n    static_configs:\n      - targets: ['127.0.0.1:%s']\n" "$RUM_CONSUMER_PORT"
        printf "  - job_name: rum-alerts\n    static_configs:\n      - targets: ['127.0.0.1:%s']\n" "${RUM_ALERTS_PORT:-8082}"
    } >"$file"
}

prometheus_start() {
    if proc_pid prometheus >/dev/null; then
        log "prometheus: already running (pid $(proc_pid prometheus))"
        # Pick up a changed config (ports, rule files added) and changed rules without a restart: a reload reads
        # the rule files again.
        local file
        file="$(data_dir prometheus)/prometheus.yml"
        render_prometheus_config "$file.new"
        mv "$file.new" "$file"
        curl -fsS --max-time 10 -X POST "http://127.0.0.1:$RUM_LOCAL_PROMETHEUS_PORT/-/reload" >/dev/null ||
            die "prometheus: reloading $file and its rule files failed; see $(log_file prometheus)"
        log "prometheus: config and rules reloaded"
        return 0
    fi
    command -v prometheus >/dev/null 2>&1 || die "prometheus: not installed; run ./deploy/local/install"
    require_port_free prometheus "$RUM_LOCAL_PROMETHEUS_PORT" RUM_LOCAL_PROMETHEUS_PORT
    local dir
    dir=$(data_dir prometheus)
    mkdir -p "$dir/tsdb"
    render_prometheus_config "$dir/prometheus.yml"
    start_process prometheus "$dir" prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
        --web.listen-address="127.0.0.1:$RUM_LOCAL_PROMETHEUS_PORT" --web.enable-lifecycle
    wait_ready prometheus "GET /-/ready" "" \
        http_ok "http://127.0.0.1:$RUM_LOCAL_PROMETHEUS_PORT/-/ready"
    log "prometheus: ready at http://127.0.0.1:$RUM_LOCAL_PROMETHEUS_PORT"
}

render_alertmanager_config() {
    cat >"$1" <<'EOF'
# Generated by deploy/local/lib.sh at every start; edits here are overwritten.
# Local development: alerts are kept in Alertmanager (see its UI / API v2) and not sent anywhere.
route:
  receiver: 'null'
  group_by: ['alertname', 'site', 'route', 'device', 'metric']
  group_wait: 10s
  group_interval: 1m
  repeat_interval: 4h
receivers:
  - name: 'null'
EOF
}

alertmanager_start() {
    if proc_pid alertmanager >/dev/null; then
        log "alertmanager: already running (pid $(proc_pid alertmanager))"
        return 0
    fi
    command -v prometheus-alertmanager >/dev/null 2>&1 ||
        die "alertmanager: prometheus-alertmanager is not installed; run ./deploy/local/install"
    require_port_free alertmanager "$RUM_LOCAL_ALERTMANAGER_PORT" RUM_LOCAL_ALERTMANAGER_PORT
    local dir
    dir=$(data_dir alertmanager)
    mkdir -p "$dir/storage"
    render_alertmanager_config "$dir/alertmanager.yml"
    # An empty --cluster.listen-address turns off the gossip port (9094).
    start_process alertmanager "$dir" prometheus-alertmanager --config.file="$dir/alertmanager.yml" \
        --storage.path="$dir/storage" --web.listen-address="127.0.0.1:$RUM_LOCAL_ALERTMANAGER_PORT" \
        --cluster.listen-address=
    wait_ready alertmanager "GET /-/ready" "" \
        http_ok "http://127.0.0.1:$RUM_LOCAL_ALERTMANAGER_PORT/-/ready"
    log "alertmanager: ready at http://127.0.0.1:$RUM_LOCAL_ALERTMANAGER_PORT"
}

# service_names NAME...: the processes behind the names (`kafka` is the brokers of the current mode, `clickhouse`
# the server or ZooKeeper and the servers of the cluster), in order.
service_names() {
    local name
    for name in "$@"; do
        case $name in
        kafka) kafka_names ;;
        clickhouse) clickhouse_names ;;
        *) printf '%s\n' "$name" ;;
        esac
    done
}

# service_check NAME: die unless NAME can be managed now (a broker of the cluster only in cluster mode).
service_check() {
    is_service "$1" ||
        die "unknown service '$1' (known: ${RUM_SERVICES[*]} ${RUM_KAFKA_CLUSTER[*]} zookeeper ${RUM_LOCAL_CLICKHOUSE_NODES[*]})"
    if [[ $1 == kafka-[123] && $(kafka_mode) != cluster ]]; then
        die "$1 is a broker of the three-broker cluster, but the local Kafka is one broker (kafka); start the cluster with ./deploy/local/up --kafka cluster"
    fi
    if [[ ($1 == clickhouse-[1234] || $1 == zookeeper) && $(clickhouse_mode) != cluster ]]; then
        die "$1 belongs to the ClickHouse cluster, but the local ClickHouse is one server (clickhouse); start the cluster with ./deploy/local/up --clickhouse cluster"
    fi
}

service_start() {
    case $1 in
    kafka)
        if [[ $(kafka_mode) == cluster ]]; then
            kafka_cluster_start
        else
            kafka_start
        fi
        ;;
    kafka-[123]) kafka_cluster_member_start "$1" ;;
    clickhouse)
        if [[ $(clickhouse_mode) == cluster ]]; then
            clickhouse_cluster_start
        else
            clickhouse_start
        fi
        ;;
    clickhouse-[1234]) clickhouse_cluster_member_start "$1" ;;
    zookeeper) zookeeper_start ;;
    prometheus) prometheus_start ;;
    alertmanager) alertmanager_start ;;
    *) die "unknown service '$1' (known: ${RUM_SERVICES[*]} ${RUM_KAFKA_CLUSTER[*]} zookeeper ${RUM_LOCAL_CLICKHOUSE_NODES[*]})" ;;
    esac
}

# service_stop NAME: SIGTERM by pid (`kafka`: all its brokers at once), SIGKILL past a timeout.
service_stop() {
    local names=()
    mapfile -t names < <(service_names "$1")
    case $1 in
    clickhouse)
        # The servers first (each flushes its tables on shutdown, ~2 s idle), then the cluster's ZooKeeper.
        local servers=() name
        for name in "${names[@]}"; do
            [[ $name == zookeeper ]] || servers+=("$name")
        done
        stop_processes 20 "${servers[@]}"
        if ((${#servers[@]} < ${#names[@]})); then
            stop_processes 10 zookeeper
        fi
        ;;
    clickhouse-*) stop_processes 20 "${names[@]}" ;;
    kafka*) stop_processes 30 "${names[@]}" ;; # a controlled shutdown moves partition leaders first
    *) stop_processes 10 "${names[@]}" ;;
    esac
}

# service_status NAME: one line a process; returns 0 when all run.
service_status() {
    local name pid rc=0
    while read -r name; do
        if pid=$(proc_pid "$name" 2>/dev/null); then
            printf '%-13s running  pid %-8s %s\n' "$name" "$pid" "$(service_url "$name")"
        else
            printf '%-13s stopped\n' "$name"
            rc=1
        fi
    done < <(service_names "$1")
    return "$rc"
}
