#!/usr/bin/env bash
# Makes sure Redis and PostgreSQL run on 127.0.0.1, installing them from Debian if missing,
# then creates the databases given as arguments. Idempotent.
set -euo pipefail
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"

apt_install() {
  echo "==> installing $* from Debian"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

wait_for() {  # wait_for <what> <command...>
  local what=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "$what did not come up" >&2; exit 1
}

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  command -v redis-server >/dev/null || apt_install redis-server
  echo "==> starting redis-server"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  installed_now=0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then apt_install postgresql; installed_now=1; fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [[ $installed_now -eq 1 ]]; then
    # A fresh development cluster: trust local TCP connections, as on the machines inferq targets.
    sed -i 's/^\(host.*127.0.0.1\/32\s*\)\S*$/\1trust/; s/^\(host.*::1\/128\s*\)\S*$/\1trust/' \
      "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  echo "==> starting PostgreSQL $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for postgresql pg_isready -h 127.0.0.1 -p 5432
fi

for db in "$@"; do
  if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
    echo "==> creating database $db"
    createdb -h 127.0.0.1 -U postgres "$db"
  fi
done
