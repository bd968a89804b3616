# Sourced by scripts/test (and usable by hand): a district platform's own RabbitMQ node for
# tests/tests/faults_platforms.rs, a single node started from the installed RabbitMQ on ports of
# its own (no Docker), with the management and shovel plugins, so a test can restart "the
# district's broker" without touching the shared one. Needs scripts/lib-services.sh,
# scripts/lib-tls.sh (rabbit_sbin) and scripts/lib-cluster.sh (its node functions, run here
# with the district's names and ports).
#
#   . scripts/lib-services.sh; . scripts/lib-tls.sh; . scripts/lib-cluster.sh; . scripts/lib-district.sh
#   start_district_node    # AMQP on 5801, management on 15801
#   stop_district_node

DISTRICT_DIR=${DISTRICT_DIR:-$PWD/target/district}
DISTRICT_AMQP_BASE=${DISTRICT_AMQP_BASE:-5800}
DISTRICT_MGMT_BASE=${DISTRICT_MGMT_BASE:-15800}
DISTRICT_DIST_BASE=${DISTRICT_DIST_BASE:-25800}
DISTRICT_NAME=${DISTRICT_NAME:-govbus-d}

# Runs a lib-cluster.sh function as if the district node were node 1 of a cluster of its own.
as_district() {
  CLUSTER_DIR="$DISTRICT_DIR" CLUSTER_AMQP_BASE="$DISTRICT_AMQP_BASE" CLUSTER_MGMT_BASE="$DISTRICT_MGMT_BASE" \
    CLUSTER_DIST_BASE="$DISTRICT_DIST_BASE" CLUSTER_NAME="$DISTRICT_NAME" "$@"
}
district_amqp_port() { echo $((DISTRICT_AMQP_BASE + 1)); }
district_mgmt_port() { echo $((DISTRICT_MGMT_BASE + 1)); }

start_district_node() {
  rabbit_sbin >/dev/null || die "the district node needs a local RabbitMQ installation (Debian: apt-get install rabbitmq-server)"
  stop_district_node
  if port_open 127.0.0.1 "$(district_amqp_port)" || port_open 127.0.0.1 "$(district_mgmt_port)"; then
    die "port $(district_amqp_port) or $(district_mgmt_port) is taken (another checkout's district node?); wait for it, or set DISTRICT_AMQP_BASE, DISTRICT_MGMT_BASE, DISTRICT_DIST_BASE and DISTRICT_NAME"
  fi
  rm -rf "$DISTRICT_DIR"; mkdir -p "$DISTRICT_DIR"
  head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DISTRICT_DIR/.erlang.cookie"
  chmod 0400 "$DISTRICT_DIR/.erlang.cookie"
  echo '[rabbitmq_management,rabbitmq_shovel,rabbitmq_shovel_management].' >"$DISTRICT_DIR/enabled_plugins"
  say "starting a district's RabbitMQ node of the suite's own ($DISTRICT_NAME""1@localhost, AMQP on $(district_amqp_port))"
  as_district start_cluster_node 1
  wait_port 127.0.0.1 "$(district_mgmt_port)" 60 || die "the district node's management API did not come up; see $DISTRICT_DIR/n1/log"
}

stop_district_node() {
  rabbit_sbin >/dev/null || return 0
  [ -f "$DISTRICT_DIR/.erlang.cookie" ] || return 0
  as_district stop_cluster_node 1
}
