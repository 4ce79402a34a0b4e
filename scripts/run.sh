#!/usr/bin/env bash
# Everything `make run` starts, after `make migrate`: the web app, the collectors worker (which hosts the
# OKX WebSocket runtime), the flush worker, the backfill/webhooks/default worker, beat, Flower and the status line. All in the foreground of
# this script, their output prefixed by name; Ctrl-C or SIGTERM stops them all. A process that dies on its
# own is started again after a pause (Celery 5.7 workers can exit when Redis restarts under them, and the
# system must keep running through that); one that keeps dying within seconds of its start stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
CELERY=.venv/bin/celery

# Makes sure an admin user exists and prints its credentials.
"$PY" manage.py ensure_admin

# An empty instrument table gets OKX's list (from OKX_REST_URL). Not fatal: the admin and the API still
# serve what is stored, and the command says why it failed.
"$PY" manage.py sync_instruments --if-empty --retries 2 \
  || echo "instrument sync failed; run 'manage.py sync_instruments' once OKX_REST_URL is reachable" >&2

# The beat schedule lives in code; this makes the database agree with it (idempotent).
"$PY" manage.py setup_periodic_tasks

# Ask the settings rather than re-reading the environment here, so values from `.env` count exactly as
# they do for the app (environment first, then .env, then defaults).
eval "$("$PY" - <<'EOF'
import os, shlex
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")
from django.conf import settings
host = settings.WEB_HOST
print("WEB_ADDR=" + shlex.quote(f"[{host}]:{settings.WEB_PORT}" if ":" in host else f"{host}:{settings.WEB_PORT}"))
print("WEB_HOST=" + shlex.quote(host))
print("WEB_PORT=" + shlex.quote(str(settings.WEB_PORT)))
print("FLOWER_ADDR=" + shlex.quote(settings.FLOWER_HOST))
print("FLOWER_PORT=" + shlex.quote(str(settings.FLOWER_PORT)))
print("LOG_LEVEL=" + shlex.quote(settings.LOG_LEVEL))
EOF
)"

if [ -z "${FLOWER_BASIC_AUTH:-}" ]; then
  if [ -s .local/admin-password ]; then
    FLOWER_BASIC_AUTH="admin:$(head -n1 .local/admin-password)"
  else
    echo "FLOWER_BASIC_AUTH is not set and there is no generated admin password: set FLOWER_BASIC_AUTH=user:password" >&2
    exit 2
  fi
fi

pids=()
names=()
declare -A commands started_at failures
start() {
  local name=$1
  shift
  commands[$name]=$(printf '%q ' "$@")
  launch "$name"
}
launch() {
  local name=$1 i
  # Each line prefixed with the name; exec makes the recorded pid the process itself (not a subshell), so
  # stopping reaches it.
  eval "exec ${commands[$name]}" > >(sed -u "s/^/[$name] /") 2>&1 &
  local pid=$!
  started_at[$name]=$SECONDS
  for i in "${!names[@]}"; do
    if [ "${names[$i]}" = "$name" ]; then pids[$i]=$pid; return; fi
  done
  pids+=("$pid")
  names+=("$name")
}

stop_all() {
  trap - INT TERM EXIT
  echo "stopping: ${names[*]}"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
# Stopping must also end the supervising loop below, or it would start everything again.
trap 'stop_all; exit 130' INT TERM
trap stop_all EXIT

# The ASGI app on uvicorn: the REST API, the admin, the chart and the live stream (ws://…/api/v1/stream) on one
# port. Access lines are off (every request of the chart would flood this console); errors still show.
start web .venv/bin/uvicorn okxproject.asgi:application --host "$WEB_HOST" --port "$WEB_PORT" \
  --ws websockets-sansio --lifespan off --no-access-log --log-level "$(echo "$LOG_LEVEL" | tr '[:upper:]' '[:lower:]')"
start collectors "$CELERY" -A okxproject worker --collector -Q collectors -n "collectors@%h" --pool solo \
  --concurrency 1 --loglevel "$LOG_LEVEL"
# Flush has a worker of its own: it must never wait behind a long backfill.
start flush "$CELERY" -A okxproject worker -Q flush -n "flush@%h" --pool solo --loglevel "$LOG_LEVEL"
start worker "$CELERY" -A okxproject worker -Q backfill,webhooks,default,storage -n "worker@%h" --concurrency 2 \
  --loglevel "$LOG_LEVEL"
start beat "$CELERY" -A okxproject beat --loglevel "$LOG_LEVEL"
start flower "$CELERY" -A okxproject flower --address="$FLOWER_ADDR" --port="$FLOWER_PORT" \
  --basic-auth="$FLOWER_BASIC_AUTH"
# The console: one line every 10 s (collectors, channels, updates/s, flush lag, buffer, open gaps, REST budget).
# Celery's line per task is off unless LOG_TASKS=true, so this line, start-up, warnings and errors are what show.
start status "$PY" manage.py status_line --every 10

cat <<EOF
okx-candles is running:
  admin   http://$WEB_ADDR/admin/   (user admin; password above or in .local/admin-password)
  stream  ws://$WEB_ADDR/api/v1/stream   (docs/stream.md)
  flower  http://$FLOWER_ADDR:$FLOWER_PORT/   (basic auth: FLOWER_BASIC_AUTH, default admin:<admin password>)
  OKX     ${OKX_WS_URL:-from settings}
Ctrl-C stops everything.
EOF

# Supervise: restart what exits, unless it keeps failing right after its start (then stop everything).
set +e
while true; do
  wait -n "${pids[@]}"
  for i in "${!names[@]}"; do
    name=${names[$i]}
    kill -0 "${pids[$i]}" 2>/dev/null && continue
    if (( SECONDS - ${started_at[$name]} < 30 )); then
      failures[$name]=$(( ${failures[$name]:-0} + 1 ))
    else
      failures[$name]=0
    fi
    if (( ${failures[$name]} >= 3 )); then
      echo "$name exited 3 times within 30 s of starting; stopping the rest" >&2
      exit 1
    fi
    echo "$name exited; starting it again in 2 s" >&2
    sleep 2
    launch "$name"
  done
done
