# Real servers for the test suite, on free loopback ports, in temporary
# directories; sourced by scripts/test.sh. Each start_* exports the URL the
# tests read; stop_servers stops everything started (also on failure: the
# caller traps EXIT).
#   start_postgres   -> WAYMARK_TEST_POSTGRES=postgresql://postgres@127.0.0.1:PORT

_servers_dir=""
_pg_data=""

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# as_postgres CMD...: PostgreSQL refuses to run as root.
as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

start_postgres() {
  local bin=/usr/lib/postgresql/15/bin port
  _servers_dir=${_servers_dir:-$(mktemp -d /tmp/waymark-servers.XXXXXX)}
  chmod 755 "$_servers_dir"
  _pg_data="$_servers_dir/pg"
  mkdir -p "$_pg_data"
  [[ $(id -u) -eq 0 ]] && chown postgres "$_pg_data"
  port=$(free_port)
  as_postgres "$bin/initdb" -D "$_pg_data/data" -A trust -U postgres --locale=C -E UTF8 \
    >"$_servers_dir/initdb.log" 2>&1 || { cat "$_servers_dir/initdb.log"; return 1; }
  as_postgres "$bin/pg_ctl" -D "$_pg_data/data" -l "$_pg_data/log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $_pg_data -c fsync=on -c synchronous_commit=on" start \
    >/dev/null || { cat "$_pg_data/log"; return 1; }
  export WAYMARK_TEST_POSTGRES="postgresql://postgres@127.0.0.1:$port"
  echo "servers: PostgreSQL 15 on 127.0.0.1:$port"
}

stop_servers() {
  if [[ -n $_pg_data && -d $_pg_data/data ]]; then
    as_postgres /usr/lib/postgresql/15/bin/pg_ctl -D "$_pg_data/data" -m fast -w stop >/dev/null 2>&1
    echo "servers: PostgreSQL stopped"
  fi
  if [[ -n $_servers_dir ]]; then rm -rf "$_servers_dir"; fi
  _pg_data="" _servers_dir=""
}
