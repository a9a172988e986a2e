# Real servers for the test suite, on free loopback ports, in temporary
# directories; sourced by scripts/test.sh. Each start_* exports the URL the
# tests read; stop_servers stops everything started (also on failure: the
# caller traps EXIT).
#   start_postgres   -> WAYMARK_TEST_POSTGRES=postgresql://postgres@127.0.0.1:PORT
#   start_nats       -> WAYMARK_TEST_NATS=nats://127.0.0.1:PORT (JetStream on)
# WAYMARK_TEST_SERVERS names the directory that holds their data, so that
# a test can restart one in place (same port, same data):
#   bash scripts/servers.sh restart nats|postgres

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

_servers_dir_init() {
  _servers_dir=${_servers_dir:-$(mktemp -d /tmp/waymark-servers.XXXXXX)}
  chmod 755 "$_servers_dir"
  export WAYMARK_TEST_SERVERS="$_servers_dir"
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (60 s at most: a
# restarted nats-server recovers its streams from disk first).
wait_port() {
  local i
  for i in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

_run_nats() {  # in $_servers_dir/nats: port, data; appends to its log
  local dir=$_servers_dir/nats
  nats-server -js -a 127.0.0.1 -p "$(cat "$dir/port")" -sd "$dir/data" >>"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  wait_port "$(cat "$dir/port")" || { cat "$dir/log"; return 1; }
}

start_nats() {
  _servers_dir_init
  mkdir -p "$_servers_dir/nats"
  free_port >"$_servers_dir/nats/port"
  _run_nats || return 1
  export WAYMARK_TEST_NATS="nats://127.0.0.1:$(cat "$_servers_dir/nats/port")"
  echo "servers: nats-server (JetStream) on 127.0.0.1:$(cat "$_servers_dir/nats/port")"
}

_stop_nats() {
  local pidfile=$_servers_dir/nats/pid
  [[ -f $pidfile ]] || return 0
  kill "$(cat "$pidfile")" 2>/dev/null
  while kill -0 "$(cat "$pidfile")" 2>/dev/null; do sleep 0.05; done
  rm -f "$pidfile"
}

start_postgres() {
  local bin=/usr/lib/postgresql/15/bin port
  _servers_dir_init
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
  if [[ -n $_servers_dir ]]; then
    _stop_nats && [[ -d $_servers_dir/nats ]] && echo "servers: nats-server stopped"
  fi
  if [[ -n $_pg_data && -d $_pg_data/data ]]; then
    as_postgres /usr/lib/postgresql/15/bin/pg_ctl -D "$_pg_data/data" -m fast -w stop >/dev/null 2>&1
    echo "servers: PostgreSQL stopped"
  fi
  if [[ -n $_servers_dir ]]; then rm -rf "$_servers_dir"; fi
  _pg_data="" _servers_dir=""
}

# Run as a script: restart a server started by this file, in place.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  _servers_dir=${WAYMARK_TEST_SERVERS:?WAYMARK_TEST_SERVERS is not set}
  case "${1:-} ${2:-}" in
    "restart nats") _stop_nats && _run_nats ;;
    "restart postgres")
      # Up to 300 s: on a busy disk the shutdown checkpoint syncs every file
      # of every test database (64 s seen), past pg_ctl's default 60, and
      # the server was then never started again. (-m immediate costs more:
      # a sync of the data directory and an end-of-recovery checkpoint.)
      as_postgres /usr/lib/postgresql/15/bin/pg_ctl -D "$_servers_dir/pg/data" -l "$_servers_dir/pg/log" -m fast -w -t 300 \
        restart >/dev/null ;;
    *) echo "usage: servers.sh restart nats|postgres" >&2; exit 2 ;;
  esac
fi
