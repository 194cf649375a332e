# shellcheck shell=bash
# deploy/local/clickhouse-cluster.sh: the ClickHouse cluster of the local stack (`up --clickhouse cluster`): one
# ZooKeeper and four ClickHouse 18.16 servers, 2 shards x 2 replicas, cluster `rum`. Sourced by lib.sh, not run.
#
#   zookeeper      Debian's ZooKeeper 3.8 (libzookeeper-java), standalone, port RUM_LOCAL_ZOOKEEPER_PORT (2181); its
#                  zoo.cfg rendered from deploy/local/zookeeper/zoo.cfg.in
#   clickhouse-1   shard 01, replica s01r1   http RUM_LOCAL_CLICKHOUSE_PORT_1 (8124), native RUM_LOCAL_CLICKHOUSE_TCP_PORT_1
#   clickhouse-2   shard 01, replica s01r2   (9001), interserver RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_1 (9011); the others
#   clickhouse-3   shard 02, replica s02r1   likewise: 8125-8127, 9002-9004, 9012-9014
#   clickhouse-4   shard 02, replica s02r2
# Each server's config is deploy/local/clickhouse/config.xml.in plus deploy/local/clickhouse/cluster.xml.in (as
# config.d/cluster.xml), rendered the way rum-testkit's ClickHouseCluster renders them. Data stays in
# $RUM_LOCAL_DIR/data/NAME across restarts. The mode `up` chose is in $RUM_LOCAL_DIR/run/clickhouse.mode.

RUM_LOCAL_CLICKHOUSE_CLUSTER_NAME=rum
# The servers and jars of ZooKeeper (packages libzookeeper-java and libslf4j-java): the jar's manifest names the
# other jars it needs; slf4j-simple logs to stderr, i.e. to log/zookeeper.log.
ZOOKEEPER_JARS=(/usr/share/java/zookeeper.jar /usr/share/java/slf4j-simple.jar)
# As rum-testkit's: a small heap, serial GC, C1 only (~0.3 s to start, ~60 MB RSS idle).
ZOOKEEPER_JVM_OPTS=(-Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true -Dorg.slf4j.simpleLogger.showDateTime=true
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ")

# ---------------------------------------------------------------------------------------------------------------------
# Mode

clickhouse_mode_file() { printf '%s/run/clickhouse.mode\n' "$RUM_LOCAL_DIR"; }

# clickhouse_mode: `single` (one server, the default) or `cluster`, as `up` last chose.
clickhouse_mode() {
    local f mode=single
    f=$(clickhouse_mode_file)
    [[ -f $f ]] && mode=$(<"$f")
    case $mode in
    single | cluster) printf '%s\n' "$mode" ;;
    *) die "$f says '$mode'; expected single or cluster (delete it to go back to one server)" ;;
    esac
}

clickhouse_set_mode() {
    mkdir -p "$RUM_LOCAL_DIR/run"
    printf '%s\n' "$1" >"$(clickhouse_mode_file)"
}

# clickhouse_names: the processes of the local ClickHouse in the current mode, in start order.
clickhouse_names() {
    if [[ $(clickhouse_mode) == cluster ]]; then
        printf '%s\n' zookeeper "${RUM_LOCAL_CLICKHOUSE_NODES[@]}"
    else
        printf 'clickhouse\n'
    fi
}

# ---------------------------------------------------------------------------------------------------------------------
# ZooKeeper

# zookeeper_classpath: the server's classpath; dies naming ./deploy/local/install when a jar is missing.
zookeeper_classpath() {
    local jar
    for jar in "${ZOOKEEPER_JARS[@]}"; do
        [[ -f $jar ]] || die "zookeeper: $jar is missing; run ./deploy/local/install (apt packages ${RUM_ZOOKEEPER_PACKAGES[*]})"
    done
    local IFS=:
    printf '%s\n' "${ZOOKEEPER_JARS[*]}"
}

# zookeeper_render_config DIR PORT: DIR/zoo.cfg from deploy/local/zookeeper/zoo.cfg.in.
zookeeper_render_config() {
    local dir=$1 port=$2 tpl
    [[ $dir != *[\\\ ]* ]] || die "zookeeper: the data dir '$dir' contains a character Java properties treat specially"
    tpl=$(<"$RUM_LOCAL_LIB_DIR/zookeeper/zoo.cfg.in")
    tpl=${tpl//@DATA_DIR@/"$dir"}
    tpl=${tpl//@PORT@/"$port"}
    if [[ $tpl =~ @[A-Z_]+@ ]]; then
        die "zookeeper: unknown placeholder ${BASH_REMATCH[0]} in $RUM_LOCAL_LIB_DIR/zookeeper/zoo.cfg.in"
    fi
    mkdir -p "$dir/data"
    printf '%s\n' "$tpl" >"$dir/zoo.cfg"
}

# zk_word PORT WORD: send a four-letter word (ruok, srvr, stat, mntr) and print the answer.
zk_word() {
    local port=$1 word=$2
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf '%s' "$word" >&3
        timeout 2 cat <&3
    ) 2>/dev/null
}

# zookeeper_serving PORT: `ruok` answers `imok` (the process listens) and `srvr` names a mode (it serves: a few ms
# later; before, srvr says "not currently serving requests").
zookeeper_serving() {
    [[ $(zk_word "$1" ruok) == imok && $(zk_word "$1" srvr) == *$'\n'Mode:* ]]
}

zookeeper_start() {
    if proc_pid zookeeper >/dev/null; then
        log "zookeeper: already running (pid $(proc_pid zookeeper))"
        return 0
    fi
    local classpath dir
    classpath=$(zookeeper_classpath)
    require_port_free zookeeper "$RUM_LOCAL_ZOOKEEPER_PORT" RUM_LOCAL_ZOOKEEPER_PORT
    dir=$(data_dir zookeeper)
    zookeeper_render_config "$dir" "$RUM_LOCAL_ZOOKEEPER_PORT"
    start_process zookeeper "$dir" "$(kafka_java)" "${ZOOKEEPER_JVM_OPTS[@]}" -cp "$classpath" \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg"
    wait_ready zookeeper "ruok and srvr on port $RUM_LOCAL_ZOOKEEPER_PORT" "" zookeeper_serving "$RUM_LOCAL_ZOOKEEPER_PORT"
    log "zookeeper: ready at 127.0.0.1:$RUM_LOCAL_ZOOKEEPER_PORT ($(rss_mb "$(proc_pid zookeeper)") MB RSS)"
}

# ---------------------------------------------------------------------------------------------------------------------
# The servers

# clickhouse_node_port NAME http|tcp|interserver: a port of clickhouse-N.
clickhouse_node_port() {
    local var
    var=$(clickhouse_node_port_var "$1" "$2") && printf '%s\n' "${!var}"
}

# clickhouse_node_port_var NAME http|tcp|interserver: the variable that holds that port.
clickhouse_node_port_var() {
    [[ $1 == clickhouse-[1234] ]] || die "unknown server of the ClickHouse cluster '$1' (clickhouse-1..4)"
    case $2 in
    http) printf 'RUM_LOCAL_CLICKHOUSE_PORT_%s\n' "${1#clickhouse-}" ;;
    tcp) printf 'RUM_LOCAL_CLICKHOUSE_TCP_PORT_%s\n' "${1#clickhouse-}" ;;
    interserver) printf 'RUM_LOCAL_CLICKHOUSE_INTERSERVER_PORT_%s\n' "${1#clickhouse-}" ;;
    *) die "clickhouse_node_port_var: unknown port kind '$2'" ;;
    esac
}

# clickhouse_node_shard NAME, clickhouse_node_replica NAME: the macros of clickhouse-N (shard-major: 1 and 2 are
# shard 01, 3 and 4 shard 02), as rum-testkit names them.
clickhouse_node_shard() { printf '%02d\n' $(((${1#clickhouse-} - 1) / 2 + 1)); }
clickhouse_node_replica() { printf 's%sr%d\n' "$(clickhouse_node_shard "$1")" $(((${1#clickhouse-} - 1) % 2 + 1)); }

clickhouse_node_url() {
    printf 'http://127.0.0.1:%s (native tcp :%s, shard %s, replica %s)\n' "$(clickhouse_node_port "$1" http)" \
        "$(clickhouse_node_port "$1" tcp)" "$(clickhouse_node_shard "$1")" "$(clickhouse_node_replica "$1")"
}

# clickhouse_cluster_shards_xml: the <shard> elements of the cluster, every replica by its native port.
clickhouse_cluster_shards_xml() {
    local shard name
    for shard in 1 2; do
        printf '            <shard>\n                <internal_replication>true</internal_replication>\n'
        for name in "clickhouse-$((2 * shard - 1))" "clickhouse-$((2 * shard))"; do
            printf '                <replica><host>127.0.0.1</host><port>%s</port></replica>\n' \
                "$(clickhouse_node_port "$name" tcp)"
        done
        printf '            </shard>\n'
    done
}

# render_clickhouse_cluster_config NAME DIR: DIR/config.xml and DIR/users.xml as for one server, plus
# DIR/config.d/cluster.xml from deploy/local/clickhouse/cluster.xml.in.
render_clickhouse_cluster_config() {
    local name=$1 dir=$2 tpl shards
    render_clickhouse_config "$dir" "$(clickhouse_node_port "$name" http)" "$(clickhouse_node_port "$name" tcp)"
    shards=$(clickhouse_cluster_shards_xml)
    tpl=$(<"$RUM_LOCAL_LIB_DIR/clickhouse/cluster.xml.in")
    tpl=${tpl//@INTERSERVER_PORT@/"$(clickhouse_node_port "$name" interserver)"}
    tpl=${tpl//@ZOOKEEPER_PORT@/"$RUM_LOCAL_ZOOKEEPER_PORT"}
    tpl=${tpl//@SHARD@/"$(clickhouse_node_shard "$name")"}
    tpl=${tpl//@REPLICA@/"$(clickhouse_node_replica "$name")"}
    tpl=${tpl//@CLUSTER@/"$RUM_LOCAL_CLICKHOUSE_CLUSTER_NAME"}
    tpl=${tpl//@SHARDS@/"$shards"}
    if [[ $tpl =~ @[A-Z_]+@ ]]; then
        die "clickhouse: unknown placeholder ${BASH_REMATCH[0]} in $RUM_LOCAL_LIB_DIR/clickhouse/cluster.xml.in"
    fi
    mkdir -p "$dir/config.d"
    printf '%s\n' "$tpl" >"$dir/config.d/cluster.xml"
}

# clickhouse_reads_zookeeper PORT: the server on PORT has its ZooKeeper session (ON CLUSTER and replication work).
clickhouse_reads_zookeeper() {
    [[ $(curl -fsS --max-time 2 "http://127.0.0.1:$1/" \
        --data-binary "SELECT count() > 0 FROM system.zookeeper WHERE path = '/'") == 1 ]]
}

# clickhouse_cluster_node_launch NAME: render the config of clickhouse-N and start it (without waiting).
clickhouse_cluster_node_launch() {
    local name=$1 kind var dir
    [[ -x $RUM_LOCAL_CLICKHOUSE_BIN ]] ||
        die "clickhouse: $RUM_LOCAL_CLICKHOUSE_BIN not found; run ./deploy/local/install"
    for kind in http tcp interserver; do
        var=$(clickhouse_node_port_var "$name" "$kind")
        require_port_free "$name" "${!var}" "$var"
    done
    dir=$(data_dir "$name")
    render_clickhouse_cluster_config "$name" "$dir"
    start_process "$name" "$dir" "$RUM_LOCAL_CLICKHOUSE_BIN" --config-file="$dir/config.xml"
}

# clickhouse_cluster_node_wait NAME [ping]: wait until clickhouse-N answers /ping and (unless `ping`) reads ZooKeeper.
clickhouse_cluster_node_wait() {
    local name=$1 port errlog
    port=$(clickhouse_node_port "$name" http)
    errlog="$(data_dir "$name")/log/clickhouse-server.err.log"
    wait_ready "$name" "GET /ping" "$errlog" http_ok "http://127.0.0.1:$port/ping" "Ok."
    if [[ ${2:-} != ping ]]; then
        wait_ready "$name" "its ZooKeeper session (127.0.0.1:$RUM_LOCAL_ZOOKEEPER_PORT)" "$errlog" \
            clickhouse_reads_zookeeper "$port"
    fi
}

# clickhouse_cluster_start: ZooKeeper, then the four servers at once (each is ready in ~0.2 s).
clickhouse_cluster_start() {
    local name started=$SECONDS waiting=() rss=()
    zookeeper_start
    for name in "${RUM_LOCAL_CLICKHOUSE_NODES[@]}"; do
        if proc_pid "$name" >/dev/null; then
            log "$name: already running (pid $(proc_pid "$name"))"
        else
            clickhouse_cluster_node_launch "$name"
            waiting+=("$name")
        fi
    done
    clickhouse_set_mode cluster
    for name in "${waiting[@]}"; do
        clickhouse_cluster_node_wait "$name"
    done
    for name in zookeeper "${RUM_LOCAL_CLICKHOUSE_NODES[@]}"; do
        rss+=("$name $(rss_mb "$(proc_pid "$name")") MB")
    done
    log "clickhouse: cluster $RUM_LOCAL_CLICKHOUSE_CLUSTER_NAME (2 shards x 2 replicas) ready at" \
        "http://127.0.0.1:$RUM_LOCAL_CLICKHOUSE_PORT_1 and the others ($((SECONDS - started)) s; RSS ${rss[*]})"
}

# clickhouse_cluster_member_start NAME: bring one server of the cluster back on its data. Its replicated tables
# resume once its old ZooKeeper session expired (5 s) and it retried (every 10 s): `services status` shows them
# read-only until then, and the replication queue while it catches up.
clickhouse_cluster_member_start() {
    local name=$1
    if proc_pid "$name" >/dev/null; then
        log "$name: already running (pid $(proc_pid "$name"))"
        return 0
    fi
    clickhouse_cluster_node_launch "$name"
    if proc_pid zookeeper >/dev/null; then
        clickhouse_cluster_node_wait "$name"
        log "$name: ready at $(clickhouse_node_url "$name")"
    else
        clickhouse_cluster_node_wait "$name" ping
        warn "$name: zookeeper is not running, its replicated tables stay read-only until it does (services start zookeeper)"
    fi
}

# clickhouse_replication_status [NAME...]: one line a running server of the cluster (default: all): its replicated
# tables, how many are read-only (no ZooKeeper session) or not replicating yet (restarted, waiting until the old
# session of its replica expired: 18.16 then reports a delay of decades), the replication queue, the largest
# delay and the fewest active replicas of a table, of that table's replicas (rum.schema_migrations has one on every
# node, a shard's tables one on each of its nodes; a killed replica counts as active until its session expired).
clickhouse_replication_status() {
    local names=("$@") name port out tables ro waiting queue delay active total
    ((${#names[@]})) || names=("${RUM_LOCAL_CLICKHOUSE_NODES[@]}")
    for name in "${names[@]}"; do
        [[ $name == clickhouse-[1234] ]] || continue
        proc_pid "$name" >/dev/null 2>&1 || continue
        port=$(clickhouse_node_port "$name" http)
        if ! out=$(curl -fsS --max-time 3 "http://127.0.0.1:$port/" --data-binary "SELECT count(), \
            countIf(is_readonly), countIf(absolute_delay > 315360000), sum(queue_size), \
            maxIf(absolute_delay, absolute_delay <= 315360000), min(active_replicas), argMin(total_replicas, active_replicas) \
            FROM system.replicas" 2>/dev/null); then
            printf '%-13s no answer from 127.0.0.1:%s\n' "$name" "$port"
            continue
        fi
        read -r tables ro waiting queue delay active total <<<"$out"
        if ((tables == 0)); then
            printf '%-13s no replicated tables\n' "$name"
        else
            printf '%-13s %s replicated tables: %s read-only, %s not replicating yet, queue %s, delay %s s, active replicas %s of %s\n' \
                "$name" "$tables" "$ro" "$waiting" "$queue" "$delay" "$active" "$total"
        fi
    done
}
