#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on 127.0.0.1 (Debian's postgresql package, installed if
# missing) and print its SQLAlchemy URL. Stop it with: scripts/postgres-throwaway.sh stop DIR
set -euo pipefail
if [ "${1:-}" = "stop" ]; then
    runuser -u postgres -- "$(ls -d /usr/lib/postgresql/*/bin | tail -1)/pg_ctl" -D "$2" -m fast stop >/dev/null
    exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
port=${PGPORT_THROWAWAY:-54329}
dir=$(mktemp -d /tmp/deepaas-like-pg.XXXXXX)
chown postgres "$dir"
runuser -u postgres -- "$bin/initdb" -D "$dir" --auth=trust -U postgres >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$dir" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres $dir"
