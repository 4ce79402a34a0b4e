#!/usr/bin/env bash
# `make demo`: the whole system against the OKX simulator, with a few instruments subscribed in 1s and 1m.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
SIM_PORT=${SIM_PORT:-8765}

"$PY" -m collectors.simulator --host 127.0.0.1 --port "$SIM_PORT" --instruments 20 --swaps \
  --push-interval 0.5 --confirm-omit-rate 0.05 > >(sed -u "s/^/[simulator] /") 2>&1 &
sim_pid=$!
trap 'kill -TERM "$sim_pid" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 50); do
  curl -fs "http://127.0.0.1:$SIM_PORT/sim/stats" >/dev/null 2>&1 && break
  sleep 0.2
done

export OKX_WS_URL="ws://127.0.0.1:$SIM_PORT/ws/v5/business" OKX_REST_URL="http://127.0.0.1:$SIM_PORT"
"$PY" manage.py sync_instruments --retries 2
"$PY" manage.py subscribe BTC-USDT ETH-USDT SOL-USDT -t 1s -t 1m \
  --backfill-from "$(date -u -d '-2 hours' +%Y-%m-%dT%H:%M:%S+00:00)"
cat <<MSG
demo: simulator on 127.0.0.1:$SIM_PORT; BTC-USDT, ETH-USDT, SOL-USDT subscribed in 1s and 1m with 2 h of history.
  candles: http://127.0.0.1:${WEB_PORT:-8000}/admin/candles/candlerecord/   (new rows every second)
  gaps:    http://127.0.0.1:${WEB_PORT:-8000}/admin/candles/gap/
MSG
scripts/run.sh
