#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 for the test suite:
# install it with the OS package manager when missing, start the cluster when stopped.
set -euo pipefail
HOST=127.0.0.1
PORT=5432
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

answers() { pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null; }
as_postgres() { if [ -z "$SUDO" ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

if command -v pg_isready >/dev/null && answers; then
  exit 0
fi
if ! command -v pg_ctlcluster >/dev/null; then
  echo "PostgreSQL is not installed; installing it with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "starting PostgreSQL $version"
$SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  answers && break
  sleep 1
done
answers || { echo "PostgreSQL did not start on $HOST:$PORT"; exit 1; }
# The tests connect as postgres over TCP without a password: allow that on loopback only.
if ! psql -h "$HOST" -U postgres -tAc 'select 1' >/dev/null 2>&1; then
  hba=$(as_postgres psql -tAc 'show hba_file' 2>/dev/null || true)
  if [ -n "$hba" ]; then
    echo "allowing trust auth for postgres on 127.0.0.1 in $hba"
    $SUDO sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
fi
