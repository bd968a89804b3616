# Sourced by scripts/test (and usable by hand): a three-node RabbitMQ cluster of the suite's
# own, started from the installed RabbitMQ (own node names, ports, data folders and one cookie;
# no Docker), so tests can stop a node under load without touching the shared broker.
# Needs scripts/lib-services.sh (say, die, port_open, wait_port) and scripts/lib-tls.sh
# (rabbit_sbin). Call start_cluster; stop_cluster at exit.
#
#   . scripts/lib-services.sh; . scripts/lib-tls.sh; . scripts/lib-cluster.sh
#   start_cluster          # nodes on AMQP ports 5701-5703, management 15701-15703
#   stop_cluster_node 1    # what a test does to node 1; start_cluster_node 1 brings it back
#   stop_cluster

CLUSTER_DIR=${CLUSTER_DIR:-$PWD/target/cluster}
CLUSTER_AMQP_BASE=${CLUSTER_AMQP_BASE:-5700}
CLUSTER_MGMT_BASE=${CLUSTER_MGMT_BASE:-15700}
CLUSTER_DIST_BASE=${CLUSTER_DIST_BASE:-25700}
CLUSTER_NAME=${CLUSTER_NAME:-govbus-c}

cluster_node() { printf '%s%s@localhost' "$CLUSTER_NAME" "$1"; }
cluster_amqp_port() { echo $((CLUSTER_AMQP_BASE + $1)); }
cluster_mgmt_port() { echo $((CLUSTER_MGMT_BASE + $1)); }

cluster_env() {
  local n=$1; shift
  env HOME="$CLUSTER_DIR" RABBITMQ_NODENAME="$(cluster_node "$n")" RABBITMQ_CONF_ENV_FILE=/dev/null \
    RABBITMQ_CONFIG_FILE="$CLUSTER_DIR/n$n/rabbitmq.conf" RABBITMQ_MNESIA_BASE="$CLUSTER_DIR/n$n/mnesia" \
    RABBITMQ_LOG_BASE="$CLUSTER_DIR/n$n/log" RABBITMQ_ENABLED_PLUGINS_FILE="$CLUSTER_DIR/enabled_plugins" \
    RABBITMQ_PID_FILE="$CLUSTER_DIR/n$n/node.pid" RABBITMQ_DIST_PORT="$((CLUSTER_DIST_BASE + n))" \
    RABBITMQ_NODE_PORT="$(cluster_amqp_port "$n")" "$@"
}

cluster_ctl() {
  local n=$1; shift
  cluster_env "$n" "$(rabbit_sbin)/rabbitmqctl" -n "$(cluster_node "$n")" "$@"
}

# Starts node n (its config and data are kept across a stop, as a real node's are).
start_cluster_node() {
  local n=$1 sbin; sbin=$(rabbit_sbin) || die "the cluster needs a local RabbitMQ installation (Debian: apt-get install rabbitmq-server)"
  mkdir -p "$CLUSTER_DIR/n$n/log" "$CLUSTER_DIR/n$n/mnesia"
  cat >"$CLUSTER_DIR/n$n/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$(cluster_amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(cluster_mgmt_port "$n")
cluster_partition_handling = pause_minority
CONF
  # The open-file limit RabbitMQ gets is the shell's: raise it to the hard limit.
  (ulimit -n "$(ulimit -Hn)" 2>/dev/null; cluster_env "$n" "$sbin/rabbitmq-server" -detached) \
    >"$CLUSTER_DIR/n$n/log/start.out" 2>&1 || die "cluster node $n did not start; see $CLUSTER_DIR/n$n/log"
  wait_port 127.0.0.1 "$(cluster_amqp_port "$n")" 120 \
    || die "cluster node $n did not listen on $(cluster_amqp_port "$n") within 120 s; see $CLUSTER_DIR/n$n/log"
}

# Stops node n the way an operator or a crash would leave it: gone, data kept.
stop_cluster_node() {
  cluster_ctl "$1" stop >/dev/null 2>&1 || true
}

start_cluster() {
  rabbit_sbin >/dev/null || die "the cluster needs a local RabbitMQ installation (Debian: apt-get install rabbitmq-server)"
  stop_cluster
  local n
  for n in 1 2 3; do
    if port_open 127.0.0.1 "$(cluster_amqp_port $n)" || port_open 127.0.0.1 "$(cluster_mgmt_port $n)"; then
      die "port $(cluster_amqp_port $n) or $(cluster_mgmt_port $n) is taken (another checkout's cluster?); wait for it, or set CLUSTER_AMQP_BASE, CLUSTER_MGMT_BASE, CLUSTER_DIST_BASE and CLUSTER_NAME"
    fi
  done
  rm -rf "$CLUSTER_DIR"; mkdir -p "$CLUSTER_DIR"
  # One cookie for the three nodes (and for rabbitmqctl), none shared with the main broker.
  head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$CLUSTER_DIR/.erlang.cookie"
  chmod 0400 "$CLUSTER_DIR/.erlang.cookie"
  echo '[rabbitmq_management].' >"$CLUSTER_DIR/enabled_plugins"
  say "starting a three-node RabbitMQ cluster of the suite's own ($(cluster_node 1) …, AMQP on $(cluster_amqp_port 1)-$(cluster_amqp_port 3))"
  for n in 1 2 3; do start_cluster_node $n; done
  for n in 2 3; do
    cluster_ctl $n stop_app >/dev/null && cluster_ctl $n join_cluster "$(cluster_node 1)" >/dev/null \
      && cluster_ctl $n start_app >/dev/null \
      || die "cluster node $n could not join $(cluster_node 1); see $CLUSTER_DIR/n$n/log"
  done
  cluster_ctl 1 await_online_nodes 3 >/dev/null || die "the cluster did not reach three nodes"
  for n in 1 2 3; do
    wait_port 127.0.0.1 "$(cluster_mgmt_port $n)" 60 || die "cluster node $n's management API did not come up; see $CLUSTER_DIR/n$n/log"
  done
}

stop_cluster() {
  rabbit_sbin >/dev/null || return 0
  [ -f "$CLUSTER_DIR/.erlang.cookie" ] || return 0
  local n
  for n in 3 2 1; do stop_cluster_node $n; done
}
