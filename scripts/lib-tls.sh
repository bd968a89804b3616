# Sourced by scripts/test: a throwaway CA, a server and a client certificate, and a second
# RabbitMQ node of the suite's own (own node name, ports, data and config; AMQP over TLS
# only), so the end-to-end tests run over amqps:// without touching the shared broker.
# Needs openssl and a local RabbitMQ installation. Call start_tls_node; stop_tls_node at exit.

TLS_DIR=${TLS_DIR:-$PWD/target/tls-node}
TLS_AMQPS_PORT=${TLS_AMQPS_PORT:-5681}
TLS_MGMT_PORT=${TLS_MGMT_PORT:-15681}
TLS_DIST_PORT=${TLS_DIST_PORT:-25681}
TLS_NODE=${TLS_NODE:-govbus-tls@localhost}

rabbit_sbin() {
  local d
  for d in /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin; do [ -x "$d/rabbitmq-server" ] && { printf '%s' "$d"; return 0; }; done
  d=$(dirname "$(readlink -f "$(command -v rabbitmq-server 2>/dev/null)" 2>/dev/null)" 2>/dev/null)
  [ -x "$d/rabbitmq-server" ] && { printf '%s' "$d"; return 0; }
  return 1
}

tls_env() {
  env HOME="$TLS_DIR" RABBITMQ_NODENAME="$TLS_NODE" RABBITMQ_CONF_ENV_FILE=/dev/null \
    RABBITMQ_CONFIG_FILE="$TLS_DIR/rabbitmq.conf" RABBITMQ_MNESIA_BASE="$TLS_DIR/mnesia" \
    RABBITMQ_LOG_BASE="$TLS_DIR/log" RABBITMQ_ENABLED_PLUGINS_FILE="$TLS_DIR/enabled_plugins" \
    RABBITMQ_PID_FILE="$TLS_DIR/node.pid" RABBITMQ_DIST_PORT="$TLS_DIST_PORT" \
    RABBITMQ_NODE_PORT="$TLS_AMQPS_PORT" "$@"
}

make_certs() {
  local d=$TLS_DIR/certs
  rm -rf "$d"; mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=govbus throwaway test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null || return 1
  local who ext
  for who in server client; do
    if [ $who = server ]; then
      ext="subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
    else
      ext="extendedKeyUsage=clientAuth"
    fi
    openssl req -newkey rsa:2048 -nodes -subj "/CN=govbus-test-$who" \
      -keyout "$d/$who.key" -out "$d/$who.csr" 2>/dev/null || return 1
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$ext" >"$d/$who.ext"
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -days 3 -extfile "$d/$who.ext" -out "$d/$who.pem" 2>/dev/null || return 1
  done
  chmod 0644 "$d"/*.pem; chmod 0600 "$d"/*.key
}

start_tls_node() {
  command -v openssl >/dev/null 2>&1 || die "the TLS step needs openssl (Debian: apt-get install openssl)"
  local sbin; sbin=$(rabbit_sbin) || die "the TLS step starts a second RabbitMQ node and needs a local RabbitMQ installation (Debian: apt-get install rabbitmq-server)"
  stop_tls_node
  if port_open 127.0.0.1 "$TLS_AMQPS_PORT" || port_open 127.0.0.1 "$TLS_MGMT_PORT"; then
    die "port $TLS_AMQPS_PORT or $TLS_MGMT_PORT is taken (another checkout's scripts/test running its TLS node?); wait for it, or set TLS_AMQPS_PORT, TLS_MGMT_PORT, TLS_DIST_PORT and TLS_NODE"
  fi
  rm -rf "$TLS_DIR"; mkdir -p "$TLS_DIR/log" "$TLS_DIR/mnesia"
  make_certs || die "openssl could not make the throwaway certificates in $TLS_DIR/certs"
  cat >"$TLS_DIR/rabbitmq.conf" <<CONF
listeners.tcp = none
listeners.ssl.default = 127.0.0.1:$TLS_AMQPS_PORT
ssl_options.cacertfile = $TLS_DIR/certs/ca.pem
ssl_options.certfile = $TLS_DIR/certs/server.pem
ssl_options.keyfile = $TLS_DIR/certs/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
management.tcp.ip = 127.0.0.1
management.tcp.port = $TLS_MGMT_PORT
CONF
  # The shovel plugins: tests/tests/platforms.rs links two platforms over TLS too.
  echo '[rabbitmq_management,rabbitmq_shovel,rabbitmq_shovel_management].' >"$TLS_DIR/enabled_plugins"
  say "starting a TLS-only RabbitMQ node of the suite's own ($TLS_NODE, amqps on $TLS_AMQPS_PORT)"
  tls_env "$sbin/rabbitmq-server" -detached >"$TLS_DIR/log/start.out" 2>&1 \
    || die "the TLS RabbitMQ node did not start; see $TLS_DIR/log"
  wait_port 127.0.0.1 "$TLS_AMQPS_PORT" 120 || die "the TLS RabbitMQ node did not listen on $TLS_AMQPS_PORT within 120 s; see $TLS_DIR/log"
  wait_port 127.0.0.1 "$TLS_MGMT_PORT" 60 || die "the TLS node's management API did not come up; see $TLS_DIR/log"
}

stop_tls_node() {
  local sbin; sbin=$(rabbit_sbin) || return 0
  [ -f "$TLS_DIR/.erlang.cookie" ] || return 0
  tls_env "$sbin/rabbitmqctl" -n "$TLS_NODE" stop >/dev/null 2>&1 || true
}
