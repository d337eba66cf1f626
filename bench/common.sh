# Shell helpers shared by bench/run.sh and bench/soak.sh (sourced, not run).

# Stop every process group listed in $1 (one pgid per line): TERM, a second, then KILL.
stop_process_groups() {
  local pgids_file=$1
  if [ -f "$pgids_file" ]; then
    while read -r pgid; do
      [ -n "$pgid" ] && kill -TERM -- "-$pgid" 2>/dev/null || true
    done <"$pgids_file"
    sleep 1
    while read -r pgid; do
      [ -n "$pgid" ] && kill -KILL -- "-$pgid" 2>/dev/null || true
    done <"$pgids_file"
    rm -f "$pgids_file"
  fi
}

# Start Postgres and Redis on 127.0.0.1 if they are not running, and wait (≤ 30 s) until both answer.
ensure_services() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
    sleep 1
  done
}
