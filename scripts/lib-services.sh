# Shared by scripts/test, scripts/demo and scripts/bench: find RabbitMQ (with its management
# plugin) and PostgreSQL from the GOVBUS__* settings, start local ones where they are installed
# but stopped, else `docker compose up -d rabbitmq postgres`, else fail saying what to install.
# Source it, then call `ensure_services`.

# Whether the caller chose the URLs; if not, the compose fallback may switch them to the
# compose file's accounts.
[ -n "${GOVBUS__AMQP__URL:-}" ] && amqp_url_chosen=1 || amqp_url_chosen=
[ -n "${GOVBUS__DATABASE__URL:-}" ] && db_url_chosen=1 || db_url_chosen=
: "${GOVBUS__AMQP__URL:=amqp://guest:guest@127.0.0.1:5672/%2f}"
: "${GOVBUS__DATABASE__URL:=postgres://postgres@127.0.0.1:5432/postgres}"
export GOVBUS__AMQP__URL GOVBUS__DATABASE__URL

say() { printf '==> [%ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# host and port of a URL like scheme://user:pass@host:port/path
url_host() { local a=${1#*://}; a=${a%%/*}; a=${a##*@}; printf '%s' "${a%%:*}"; }
url_port() { local a=${1#*://}; a=${a%%/*}; a=${a##*@}; [[ $a == *:* ]] && printf '%s' "${a##*:}" || printf '%s' "$2"; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() { # host port seconds what
  local i
  for ((i = 0; i < $3 * 2; i++)); do port_open "$1" "$2" && return 0; sleep 0.5; done
  return 1
}

is_local() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 ]]; }

compose_up() {
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    say "starting RabbitMQ and PostgreSQL with docker compose"
    docker compose up -d --wait rabbitmq postgres || die "docker compose up -d rabbitmq postgres failed"
    [ -n "$amqp_url_chosen" ] || GOVBUS__AMQP__URL="amqp://${GOVBUS_RABBITMQ_ADMIN_USER:-govbus}:${GOVBUS_RABBITMQ_ADMIN_PASSWORD:-govbus}@127.0.0.1:5672/%2f"
    [ -n "$db_url_chosen" ] || GOVBUS__DATABASE__URL="postgres://postgres:${GOVBUS_POSTGRES_PASSWORD:-govbus}@127.0.0.1:5432/govbus"
    export GOVBUS__AMQP__URL GOVBUS__DATABASE__URL
    return 0
  fi
  return 1
}

# A RabbitMQ plugin's listener, enabling the plugin on a local broker: plugin, host, port, URL.
ensure_plugin() {
  port_open "$2" "$3" && return 0
  if is_local "$2" && command -v rabbitmq-plugins >/dev/null 2>&1; then
    say "enabling the RabbitMQ plugin $1 (rabbitmq-plugins enable $1)"
    rabbitmq-plugins enable "$1" >/dev/null || die "could not enable $1"
    wait_port "$2" "$3" 60 || die "$1 did not come up on $2:$3"
  else
    die "nothing listens at $4: enable the $1 plugin there"
  fi
}

ensure_rabbitmq() {
  local host port mport
  host=$(url_host "$GOVBUS__AMQP__URL"); port=$(url_port "$GOVBUS__AMQP__URL" 5672)
  : "${GOVBUS__AMQP__MANAGEMENT_URL:=http://$host:15672}"
  export GOVBUS__AMQP__MANAGEMENT_URL
  mport=$(url_port "$GOVBUS__AMQP__MANAGEMENT_URL" 15672)
  if ! port_open "$host" "$port"; then
    if is_local "$host" && command -v rabbitmq-server >/dev/null 2>&1; then
      say "RabbitMQ is not running on $host:$port; starting the local one (rabbitmq-server -detached)"
      if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
        # As its own user with as many open files as allowed: `su` alone gives 1,024, with which
        # RabbitMQ stops accepting connections once there are a few hundred quorum queues
        # (docs/operators.md, "RabbitMQ's open-file limit").
        su rabbitmq -s /bin/sh -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; rabbitmq-server -detached' >/dev/null 2>&1 || true
      else
        rabbitmq-server -detached >/dev/null 2>&1 || true
      fi
      wait_port "$host" "$port" 90 || die "RabbitMQ did not start within 90 s; see /var/log/rabbitmq"
    else
      compose_up || die "no RabbitMQ at $host:$port. Install it (Debian: apt-get install rabbitmq-server) or Docker, or set GOVBUS__AMQP__URL"
      wait_port "$host" "$port" 90 || die "RabbitMQ did not come up on $host:$port"
    fi
  fi
  ensure_plugin rabbitmq_management "$host" "$mport" "$GOVBUS__AMQP__MANAGEMENT_URL"
  # Prometheus scrapes RabbitMQ's own exporter (deploy/prometheus/prometheus.yml); the suite
  # checks that every metric an alert or a dashboard panel uses is there.
  : "${GOVBUS_RABBITMQ_PROMETHEUS_URL:=http://$host:15692}"
  export GOVBUS_RABBITMQ_PROMETHEUS_URL
  local pport
  pport=$(url_port "$GOVBUS_RABBITMQ_PROMETHEUS_URL" 15692)
  ensure_plugin rabbitmq_prometheus "$host" "$pport" "$GOVBUS_RABBITMQ_PROMETHEUS_URL"
  # Links between platforms are RabbitMQ shovels (`govbus provision`, tests/tests/platforms.rs);
  # the plugins have no listener of their own to probe, so ask a local broker which are on.
  if is_local "$host" && command -v rabbitmq-plugins >/dev/null 2>&1 \
    && ! rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_shovel_management; then
    say "enabling the RabbitMQ plugins rabbitmq_shovel and rabbitmq_shovel_management"
    rabbitmq-plugins enable rabbitmq_shovel rabbitmq_shovel_management >/dev/null \
      || die "could not enable rabbitmq_shovel and rabbitmq_shovel_management"
  fi
  say "RabbitMQ: $host:$port (management on port $mport, Prometheus on $pport)"
}

ensure_postgres() {
  local host port
  host=$(url_host "$GOVBUS__DATABASE__URL"); port=$(url_port "$GOVBUS__DATABASE__URL" 5432)
  if ! port_open "$host" "$port"; then
    if is_local "$host" && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
      local v
      v=$(ls /etc/postgresql | sort -V | tail -n 1)
      say "PostgreSQL is not running on $host:$port; starting the local cluster $v/main"
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || die "pg_ctlcluster $v main start failed"
      wait_port "$host" "$port" 60 || die "PostgreSQL did not start within 60 s"
    else
      compose_up || die "no PostgreSQL at $host:$port. Install it (Debian: apt-get install postgresql) or Docker, or set GOVBUS__DATABASE__URL"
      wait_port "$host" "$port" 60 || die "PostgreSQL did not come up on $host:$port"
    fi
  fi
  say "PostgreSQL: $host:$port"
}

# MariaDB (or MySQL) for the adapter's MySQL source tests only (adapters/tests/mysql_source.rs):
# GOVBUS__MYSQL__URL, else the local server, started if installed but stopped.
ensure_mariadb() {
  : "${GOVBUS__MYSQL__URL:=mysql://root@127.0.0.1:3306/test}"
  export GOVBUS__MYSQL__URL
  local host port
  host=$(url_host "$GOVBUS__MYSQL__URL"); port=$(url_port "$GOVBUS__MYSQL__URL" 3306)
  if ! port_open "$host" "$port"; then
    if is_local "$host" && [ -x /usr/sbin/mariadbd ]; then
      say "MariaDB is not running on $host:$port; starting the local server (/usr/sbin/mariadbd)"
      start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd \
        || die "could not start /usr/sbin/mariadbd"
      wait_port "$host" "$port" 60 || die "MariaDB did not start within 60 s"
    else
      compose_up_mariadb || die "no MariaDB at $host:$port. Install it (Debian: apt-get install mariadb-server) or Docker, or set GOVBUS__MYSQL__URL"
      wait_port "$host" "$port" 90 || die "MariaDB did not come up on $host:$port"
    fi
  fi
  say "MariaDB: $host:$port"
}

compose_up_mariadb() {
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    say "starting MariaDB with docker compose (profile tests)"
    docker compose --profile tests up -d --wait mariadb || die "docker compose up -d mariadb failed"
    return 0
  fi
  return 1
}

ensure_services() { ensure_rabbitmq; ensure_postgres; }
