#!/usr/bin/env bash
# Everything `make run` starts, after `make migrate` has run. For now only the web server, in the
# foreground; Celery workers, beat and flower will be started here too, in the background, with the web
# server staying the foreground process that Ctrl-C stops.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python

# Makes sure an admin user exists and prints its credentials.
"$PY" manage.py ensure_admin

# An empty instrument table gets OKX's list (from OKX_REST_URL). Not fatal: the admin and the API still
# serve what is stored, and the command says why it failed.
"$PY" manage.py sync_instruments --if-empty --retries 2 || echo "instrument sync failed; run 'manage.py sync_instruments' once OKX_REST_URL is reachable" >&2

# Ask the settings for the address rather than re-reading the environment here, so WEB_HOST/WEB_PORT
# from `.env` count exactly as they do for the app (environment first, then .env, then defaults).
addr="$("$PY" -c '
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "okxproject.settings")
from django.conf import settings
host = settings.WEB_HOST
print(f"[{host}]:{settings.WEB_PORT}" if ":" in host else f"{host}:{settings.WEB_PORT}")
')"

# --noreload: one process, so the PID `make run` leaves behind is the server's own.
exec "$PY" manage.py runserver "$addr" --noreload
