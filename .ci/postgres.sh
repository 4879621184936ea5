#!/usr/bin/env bash
# Install (Debian package) and start a PostgreSQL cluster of pctr's own on loopback, for Airflow's metadata and
# MLflow's tracking store (conf/cluster.toml): role pctr (password pctr, may create databases, as the tests do),
# databases airflow and mlflow owned by it. Its data stays outside the checkout, so `make clean` keeps it.
# Prints nothing when the cluster already runs. PCTR_PG_RESET=1 drops and creates airflow and mlflow again.
set -euo pipefail
port=${PCTR_PG_PORT:-5433}
data=${PCTR_PG_DATA:-/var/tmp/pctr-postgres}
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "postgres: installing postgresql (apt)"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi
bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

# initdb and the server refuse to run as root; from / so that the postgres user need not read the caller's directory
as_postgres() { (cd / && $sudo runuser -u postgres -- "$@"); }

if ! as_postgres "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
  if [ ! -s "$data/PG_VERSION" ]; then
    $sudo install -d -o postgres -g postgres -m 700 "$data"
    # peer authentication on the socket (the superuser, below), passwords over TCP (everyone else)
    as_postgres "$bin/initdb" -D "$data" -U postgres -E UTF8 --no-locale \
      --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  fi
  # the socket in the data directory: Debian's /run/postgresql may be gone (a container's fresh /run)
  as_postgres "$bin/pg_ctl" start -D "$data" -w -t 60 -l "$data/server.log" \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$data" >/dev/null
  echo "postgres: started on 127.0.0.1:$port (data: $data, log: $data/server.log)"
fi

if [ "${PCTR_PG_RESET:-0}" = 1 ]; then
  # make demo-cluster starts from an empty home: runs and models of an earlier home must not be in its stores
  as_postgres "$bin/psql" -h "$data" -p "$port" -d postgres -qAt -v ON_ERROR_STOP=1 \
    -c 'DROP DATABASE IF EXISTS airflow WITH (FORCE)' -c 'DROP DATABASE IF EXISTS mlflow WITH (FORCE)'
fi
as_postgres "$bin/psql" -h "$data" -p "$port" -d postgres -qAt -v ON_ERROR_STOP=1 <<'SQL'
SELECT 'CREATE ROLE pctr LOGIN CREATEDB PASSWORD ''pctr''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pctr')
\gexec
SELECT format('CREATE DATABASE %I OWNER pctr', name) FROM unnest(ARRAY['airflow', 'mlflow']) AS name
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = name)
\gexec
SQL
