# shellcheck shell=bash
# deploy/local/kafka.sh: Apache Kafka (KRaft) for the local stack and the benchmark. Sourced by lib.sh, not run.
#
# The jars come from Maven Central (deploy/local/kafka/pom.xml, versions in stack.env) into $RUM_LOCAL_KAFKA_HOME/lib,
# once. A broker is `java ... kafka.Kafka server.properties`, its config rendered from
# deploy/local/kafka/server.properties.in (rum-testkit renders the same template the same way), its data dir
# formatted once with StorageTool and kept across restarts. Every node is broker and controller:
#   kafka                        one broker (`up --kafka kafka`), replication factor 1
#   kafka-1, kafka-2, kafka-3    three brokers (`up --kafka cluster`), replication factor 3, min.insync.replicas 2
# The mode `up` chose is in $RUM_LOCAL_DIR/run/kafka.mode (`services` reads it).

RUM_KAFKA_CONF_DIR="$RUM_LOCAL_LIB_DIR/kafka"
# The brokers' JVM options besides the heap (-Xmx from RUM_LOCAL_KAFKA_HEAP_MB). The local stack's brokers start
# fast and small (serial GC, C1 only, as rum-testkit's); bench/run sets full-speed options for its broker.
KAFKA_JVM_OPTS=(-Xms64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true)

# ---------------------------------------------------------------------------------------------------------------------
# Java and the jars

# kafka_java: the java that runs Kafka: RUM_JAVA_BIN, else $JAVA_HOME/bin/java, else java on PATH (as rum-testkit).
kafka_java() {
    if [[ -n ${RUM_JAVA_BIN:-} ]]; then
        printf '%s\n' "$RUM_JAVA_BIN"
    elif [[ -n ${JAVA_HOME:-} ]]; then
        printf '%s\n' "$JAVA_HOME/bin/java"
    else
        command -v java || printf 'java\n'
    fi
}

# java_major JAVA: the major version of JAVA (8 for 1.8), nothing when it does not run.
java_major() {
    local out
    out=$("$1" -version 2>&1) || return 1
    [[ $out =~ version\ \"([0-9]+)(\.([0-9]+))? ]] || return 1
    if [[ ${BASH_REMATCH[1]} == 1 ]]; then
        printf '%s\n' "${BASH_REMATCH[3]}"
    else
        printf '%s\n' "${BASH_REMATCH[1]}"
    fi
}

# require_java: the java of kafka_java is 17 or newer (Kafka 4 needs it); die naming what to do otherwise.
require_java() {
    local java major
    java=$(kafka_java)
    major=$(java_major "$java") || die "kafka: $java does not run; Apache Kafka needs Java 17 or newer: run ./deploy/local/install (or set JAVA_HOME)"
    ((major >= 17)) ||
        die "kafka: $java is Java $major; Apache Kafka $RUM_KAFKA_VERSION needs 17 or newer: set JAVA_HOME (e.g. /usr/lib/jvm/java-17-openjdk-amd64)"
}

# ensure_java: Java 17+ and Maven, from apt when missing.
ensure_java() {
    local major=""
    major=$(java_major "$(kafka_java)") || major=""
    if [[ -z $major ]] || ((major < 17)); then
        apt_ensure openjdk-17-jre-headless
    fi
    command -v mvn >/dev/null 2>&1 || apt_ensure --no-install-recommends maven
    require_java
}

# ensure_kafka: fetch Apache Kafka's jars once into $RUM_LOCAL_KAFKA_HOME/lib (Maven, from deploy/local/kafka/pom.xml).
# lib/ appears whole or not at all (fetched beside it, then renamed); the marker `fetched` names the versions, so a
# changed stack.env fetches again; a lock keeps two scripts from fetching at once.
ensure_kafka() {
    local lib=$RUM_LOCAL_KAFKA_HOME/lib marker=$RUM_LOCAL_KAFKA_HOME/fetched want
    want="kafka $RUM_KAFKA_VERSION log4j $RUM_KAFKA_LOG4J_VERSION"
    if [[ -f $marker && $(<"$marker") == "$want" && -d $lib ]]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 ||
        die "kafka: Apache Kafka $RUM_KAFKA_VERSION is not in $lib and mvn is missing: run ./deploy/local/install"
    mkdir -p "$RUM_LOCAL_KAFKA_HOME" || die "kafka: cannot create $RUM_LOCAL_KAFKA_HOME (RUM_LOCAL_KAFKA_HOME)"
    local lock_fd
    exec {lock_fd}>"$RUM_LOCAL_KAFKA_HOME/lock"
    if ! flock -n "$lock_fd"; then
        log "kafka: another process is fetching Apache Kafka into $RUM_LOCAL_KAFKA_HOME; waiting for it"
        flock "$lock_fd"
    fi
    if [[ ! -f $marker || $(<"$marker") != "$want" || ! -d $lib ]]; then
        local tmp=$RUM_LOCAL_KAFKA_HOME/lib.partial fetch_log=$RUM_LOCAL_KAFKA_HOME/fetch.log started=$SECONDS
        log "kafka: fetching Apache Kafka $RUM_KAFKA_VERSION with Maven into $lib (once, 15-35 s); log: $fetch_log"
        rm -rf "$tmp" "$marker"
        if ! mvn -q -B -f "$RUM_KAFKA_CONF_DIR/pom.xml" -Dmaven.repo.local="$HOME/.cache/rum/m2" \
            -Dkafka.version="$RUM_KAFKA_VERSION" -Dlog4j.version="$RUM_KAFKA_LOG4J_VERSION" \
            dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$fetch_log" 2>&1; then
            show_log_tail "$fetch_log"
            die "kafka: fetching Apache Kafka $RUM_KAFKA_VERSION with Maven failed; see $fetch_log"
        fi
        [[ -f $tmp/kafka_2.13-$RUM_KAFKA_VERSION.jar ]] ||
            die "kafka: Maven finished but $tmp/kafka_2.13-$RUM_KAFKA_VERSION.jar is missing; see $fetch_log"
        rm -rf "$lib"
        mv "$tmp" "$lib"
        printf '%s\n' "$want" >"$marker"
        log "kafka: fetched in $((SECONDS - started)) s: $(find "$lib" -name '*.jar' | wc -l) jars, $(du -sh "$lib" | cut -f1)"
    fi
    flock -u "$lock_fd"
    exec {lock_fd}>&-
}

# kafka_tool CLASS ARGS...: one of Kafka's command-line tools (warnings only, on stderr).
kafka_tool() {
    "$(kafka_java)" -cp "$RUM_LOCAL_KAFKA_HOME/lib/*" -Dlog4j2.configurationFile="$RUM_KAFKA_CONF_DIR/tools-log4j2.properties" \
        "$@"
}

# kafka_topics PORT ARGS...: TopicCommand against the broker on PORT; gives up after ~10 s without an answer.
kafka_topics() {
    local port=$1
    shift
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
        --command-config "$RUM_KAFKA_CONF_DIR/tools.properties" "$@"
}

# ---------------------------------------------------------------------------------------------------------------------
# One node: config, storage, process

# kafka_render_config DIR NODE_ID VOTERS PORT CONTROLLER_PORT REPLICATION_FACTOR MIN_ISR: DIR/server.properties.
kafka_render_config() {
    local dir=$1 tpl
    [[ $dir != *[\\:=\ ]* ]] || die "kafka: the data dir '$dir' contains a character Java properties treat specially"
    tpl=$(<"$RUM_KAFKA_CONF_DIR/server.properties.in")
    tpl=${tpl//@DATA_DIR@/"$dir"}
    tpl=${tpl//@NODE_ID@/"$2"}
    tpl=${tpl//@VOTERS@/"$3"}
    tpl=${tpl//@PORT@/"$4"}
    tpl=${tpl//@CONTROLLER_PORT@/"$5"}
    tpl=${tpl//@REPLICATION_FACTOR@/"$6"}
    tpl=${tpl//@MIN_ISR@/"$7"}
    if [[ $tpl =~ @[A-Z_]+@ ]]; then
        die "kafka: unknown placeholder ${BASH_REMATCH[0]} in $RUM_KAFKA_CONF_DIR/server.properties.in"
    fi
    mkdir -p "$dir"
    printf '%s\n' "$tpl" >"$dir/server.properties"
}

# kafka_cluster_id DIR...: the cluster id of the first DIR already formatted, else a new one (22 characters,
# base64url of 16 random bytes, not starting with '-'), so a node formatted later joins the cluster of the others.
kafka_cluster_id() {
    local dir id
    for dir in "$@"; do
        if [[ -f $dir/log/meta.properties ]]; then
            id=$(sed -n 's/^cluster\.id=//p' "$dir/log/meta.properties")
            if [[ -n $id ]]; then
                printf '%s\n' "$id"
                return 0
            fi
        fi
    done
    # An id that starts with '-' is taken for an option by kafka-storage's argument parser: draw again.
    while id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n') && [[ $id == -* ]]; do :; done
    printf '%s\n' "$id"
}

# kafka_format NAME DIR CLUSTER_ID: format DIR's log dir once (meta.properties missing); the data stays afterwards.
kafka_format() {
    local name=$1 dir=$2 id=$3 out
    [[ -f $dir/log/meta.properties ]] && return 0
    log "$name: formatting $dir/log (cluster id $id)"
    out=$(kafka_tool kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" 2>&1) || {
        printf '%s\n' "$out" | sed 's/^/    | /' >&2
        die "$name: formatting $dir/log failed"
    }
}

# kafka_node_start NAME DIR NODE_ID VOTERS PORT CONTROLLER_PORT REPLICATION_FACTOR MIN_ISR CLUSTER_ID: render its
# config, format once, start the JVM (without waiting).
kafka_node_start() {
    local name=$1 dir=$2
    kafka_render_config "$dir" "$3" "$4" "$5" "$6" "$7" "$8"
    kafka_format "$name" "$dir" "$9"
    start_process "$name" "$dir" "$(kafka_java)" "-Xmx${RUM_LOCAL_KAFKA_HEAP_MB}m" "${KAFKA_JVM_OPTS[@]}" \
        -Dlog4j2.configurationFile="$RUM_KAFKA_CONF_DIR/log4j2.properties" -cp "$RUM_LOCAL_KAFKA_HOME/lib/*" \
        kafka.Kafka "$dir/server.properties"
}

# kafka_wait_port NAME PORT: wait until the broker NAME accepts connections on PORT.
kafka_wait_port() {
    local name=$1 port=$2 started
    started=$(stat -c %Y "$(pid_file "$name")")
    RUM_LOCAL_START_TIMEOUT=$RUM_LOCAL_KAFKA_START_TIMEOUT wait_ready "$name" "port $port" "" tcp_open "$port"
    log "$name: port $port open $(($(date +%s) - started)) s after its start ($(rss_mb "$(proc_pid "$name")") MB RSS, heap at most ${RUM_LOCAL_KAFKA_HEAP_MB} MiB)"
}

# rss_mb PID: resident memory of PID in MB.
rss_mb() { awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || printf '?'; }

# kafka_create_topic NAME PORT TOPIC PARTITIONS REPLICATION_FACTOR MIN_ISR: create TOPIC through the broker NAME on
# PORT (an existing topic is fine). Retries until RUM_LOCAL_KAFKA_START_TIMEOUT: a cluster whose brokers have not
# all registered yet refuses replication factor 3.
kafka_create_topic() {
    local name=$1 port=$2 topic=$3 partitions=$4 rf=$5 min_isr=$6 deadline=$((SECONDS + RUM_LOCAL_KAFKA_START_TIMEOUT))
    local out args=(--create --if-not-exists --topic "$3" --partitions "$4" --replication-factor "$5")
    ((rf == 1)) || args+=(--config "min.insync.replicas=$min_isr")
    until out=$(kafka_topics "$port" "${args[@]}" 2>&1); do
        ((SECONDS < deadline)) || {
            printf '%s\n' "$out" | tail -n 5 | sed 's/^/    | /' >&2
            die "$name: could not create topic $topic within ${RUM_LOCAL_KAFKA_START_TIMEOUT} s"
        }
        log "$name: topic $topic not created yet ($(grep -m1 -oE '[A-Za-z]+(Exception|Error): .*' <<<"$out" | cut -c1-120)); retrying"
        sleep 2
    done
    log "$name: created topic $topic (partitions $partitions, replication factor $rf$( ((rf == 1)) || printf ', min.insync.replicas %s' "$min_isr"))"
}

# kafka_ensure_topics NAME PORT REPLICATION_FACTOR MIN_ISR: the topics of stack.env exist, once the brokers answer
# metadata (ready means both).
kafka_ensure_topics() {
    local name=$1 port=$2 rf=$3 min_isr=$4 deadline=$((SECONDS + RUM_LOCAL_KAFKA_START_TIMEOUT)) existing spec
    until existing=$(kafka_topics "$port" --list 2>&1); do
        ((SECONDS < deadline)) || {
            printf '%s\n' "$existing" | tail -n 5 | sed 's/^/    | /' >&2
            die "$name: no metadata answer on port $port within ${RUM_LOCAL_KAFKA_START_TIMEOUT} s; see $(log_file "$name")"
        }
        sleep 1
    done
    for spec in "$RUM_KAFKA_TOPIC:$RUM_KAFKA_TOPIC_PARTITIONS" "$RUM_KAFKA_DLQ_TOPIC:$RUM_KAFKA_DLQ_TOPIC_PARTITIONS"; do
        if grep -qxF "${spec%%:*}" <<<"$existing"; then
            log "$name: topic ${spec%%:*} exists"
        else
            kafka_create_topic "$name" "$port" "${spec%%:*}" "${spec##*:}" "$rf" "$min_isr"
        fi
    done
}

# kafka_single_start NAME DIR PORT CONTROLLER_PORT: one broker (combined KRaft) with the topics; keeps DIR's data.
kafka_single_start() {
    local name=$1 dir=$2 port=$3 cport=$4 started=$SECONDS
    ensure_kafka
    require_java
    if proc_pid "$name" >/dev/null; then
        log "$name: already running (pid $(proc_pid "$name"))"
    else
        kafka_node_start "$name" "$dir" 1 "1@127.0.0.1:$cport" "$port" "$cport" 1 1 "$(kafka_cluster_id "$dir")"
        kafka_wait_port "$name" "$port"
    fi
    kafka_ensure_topics "$name" "$port" 1 1
    log "$name: ready at 127.0.0.1:$port ($((SECONDS - started)) s, $(rss_mb "$(proc_pid "$name")") MB RSS)"
}

# ---------------------------------------------------------------------------------------------------------------------
# The local stack's Kafka: mode, one broker, the cluster

kafka_mode_file() { printf '%s/run/kafka.mode\n' "$RUM_LOCAL_DIR"; }

# kafka_mode: `kafka` (one broker, the default) or `cluster`, as `up` last chose.
kafka_mode() {
    local f mode=kafka
    f=$(kafka_mode_file)
    [[ -f $f ]] && mode=$(<"$f")
    case $mode in
    kafka | cluster) printf '%s\n' "$mode" ;;
    *) die "$f says '$mode'; expected kafka or cluster (delete it to go back to one broker)" ;;
    esac
}

kafka_set_mode() {
    mkdir -p "$RUM_LOCAL_DIR/run"
    printf '%s\n' "$1" >"$(kafka_mode_file)"
}

# kafka_names: the processes of the local Kafka in the current mode.
kafka_names() {
    if [[ $(kafka_mode) == cluster ]]; then
        printf '%s\n' "${RUM_KAFKA_CLUSTER[@]}"
    else
        printf 'kafka\n'
    fi
}

# kafka_brokers: the bootstrap list of the local Kafka in the current mode.
kafka_brokers() {
    if [[ $(kafka_mode) == cluster ]]; then
        printf '127.0.0.1:%s,127.0.0.1:%s,127.0.0.1:%s\n' "$RUM_LOCAL_KAFKA_PORT_1" "$RUM_LOCAL_KAFKA_PORT_2" \
            "$RUM_LOCAL_KAFKA_PORT_3"
    else
        printf '127.0.0.1:%s\n' "$RUM_LOCAL_KAFKA_PORT"
    fi
}

# kafka_port_var NAME [controller]: the name of the variable that holds the client (or controller) port of the
# broker NAME of the stack.
kafka_port_var() {
    local kind=${2:+CONTROLLER_}
    case $1 in
    kafka) printf 'RUM_LOCAL_KAFKA_%sPORT\n' "$kind" ;;
    kafka-[123]) printf 'RUM_LOCAL_KAFKA_%sPORT_%s\n' "$kind" "${1#kafka-}" ;;
    *) die "unknown broker '$1' (kafka, kafka-1, kafka-2, kafka-3)" ;;
    esac
}
# kafka_port NAME, kafka_controller_port NAME: the ports of the broker NAME.
kafka_port() {
    local var
    var=$(kafka_port_var "$1") && printf '%s\n' "${!var}"
}
kafka_controller_port() {
    local var
    var=$(kafka_port_var "$1" controller) && printf '%s\n' "${!var}"
}

# kafka_require_ports_free NAME: both ports of the broker NAME are free (else one line naming the variable).
kafka_require_ports_free() {
    local var
    for var in "$(kafka_port_var "$1")" "$(kafka_port_var "$1" controller)"; do
        require_port_free "$1" "${!var}" "$var"
    done
}

# kafka_start: the stack's single broker `kafka`.
kafka_start() {
    if ! proc_pid kafka >/dev/null; then
        kafka_require_ports_free kafka
    fi
    kafka_single_start kafka "$(data_dir kafka)" "$RUM_LOCAL_KAFKA_PORT" "$RUM_LOCAL_KAFKA_CONTROLLER_PORT"
    kafka_set_mode kafka
}

kafka_cluster_voters() {
    printf '1@127.0.0.1:%s,2@127.0.0.1:%s,3@127.0.0.1:%s\n' "$RUM_LOCAL_KAFKA_CONTROLLER_PORT_1" \
        "$RUM_LOCAL_KAFKA_CONTROLLER_PORT_2" "$RUM_LOCAL_KAFKA_CONTROLLER_PORT_3"
}

# kafka_cluster_node_start NAME: start one broker of the cluster on its data (without waiting).
kafka_cluster_node_start() {
    local name=$1 n=${1#kafka-} id
    kafka_require_ports_free "$name"
    id=$(kafka_cluster_id "$(data_dir kafka-1)" "$(data_dir kafka-2)" "$(data_dir kafka-3)")
    kafka_node_start "$name" "$(data_dir "$name")" "$n" "$(kafka_cluster_voters)" "$(kafka_port "$name")" \
        "$(kafka_controller_port "$name")" 3 2 "$id"
}

# kafka_cluster_start: the three brokers, started together (a KRaft quorum needs two of three), then the topics
# (replication factor 3, min.insync.replicas 2).
kafka_cluster_start() {
    ensure_kafka
    require_java
    local name started=$SECONDS waiting=()
    for name in "${RUM_KAFKA_CLUSTER[@]}"; do
        if proc_pid "$name" >/dev/null; then
            log "$name: already running (pid $(proc_pid "$name"))"
        else
            kafka_cluster_node_start "$name"
            waiting+=("$name")
        fi
    done
    kafka_set_mode cluster
    if ((${#waiting[@]})); then
        log "kafka: waiting for ${waiting[*]} (three JVMs on $(nproc) cores: expect tens of seconds)"
    fi
    for name in "${waiting[@]}"; do
        kafka_wait_port "$name" "$(kafka_port "$name")"
    done
    kafka_ensure_topics kafka-1 "$RUM_LOCAL_KAFKA_PORT_1" 3 2
    local rss=()
    for name in "${RUM_KAFKA_CLUSTER[@]}"; do
        rss+=("$name $(rss_mb "$(proc_pid "$name")") MB")
    done
    log "kafka: cluster ready at $(kafka_brokers) ($((SECONDS - started)) s; RSS ${rss[*]})"
}

# kafka_live_port: the client port of a running broker of the stack (empty when none runs).
kafka_live_port() {
    local name
    while read -r name; do
        if proc_pid "$name" >/dev/null 2>&1; then
            kafka_port "$name"
            return 0
        fi
    done < <(kafka_names)
}

# kafka_cluster_member_start NAME: bring one broker of the cluster back on its data; ready when it answers
# metadata (its replicas then catch up in the background: `services status` shows the under-replicated partitions).
kafka_cluster_member_start() {
    local name=$1 port started=$SECONDS
    ensure_kafka
    require_java
    if proc_pid "$name" >/dev/null; then
        log "$name: already running (pid $(proc_pid "$name"))"
        return 0
    fi
    kafka_cluster_node_start "$name"
    port=$(kafka_port "$name")
    kafka_wait_port "$name" "$port"
    RUM_LOCAL_START_TIMEOUT=$RUM_LOCAL_KAFKA_START_TIMEOUT wait_ready "$name" "a metadata answer on port $port" "" \
        kafka_topics "$port" --list
    log "$name: ready at 127.0.0.1:$port ($((SECONDS - started)) s)"
}

# kafka_under_replicated PORT: how many partitions have fewer in-sync replicas than replicas.
kafka_under_replicated() {
    local out
    out=$(kafka_topics "$1" --describe --under-replicated-partitions 2>/dev/null) || return 1
    grep -c 'Partition:' <<<"$out" || true
}

# kafka_incarnation: the consumer's topic incarnation for the local Kafka of the current mode: its cluster id,
# lowercased. Another mode's Kafka, or one whose data was deleted, starts its offsets at 0 again: the offsets that
# ClickHouse stored for the previous one must not be taken for floors (consumer.topic_incarnation).
kafka_incarnation() {
    local name dir id
    name=$(kafka_names | head -n 1)
    dir=$(data_dir "$name")
    id=$(sed -n 's/^cluster\.id=//p' "$dir/log/meta.properties" 2>/dev/null)
    [[ -n $id ]] || die "$name: no cluster.id in $dir/log/meta.properties"
    printf 'kafka-%s\n' "${id,,}"
}
