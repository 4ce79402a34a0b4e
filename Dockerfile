# okx-candles: one image for the web app, the Celery workers, beat and flower (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Requirements first, so a code change does not reinstall them. psycopg[binary] ships its own libpq.
COPY requirements/base.txt requirements/base.txt
RUN pip install -r requirements/base.txt

# A fixed uid so mounted volumes get predictable ownership; the code stays root-owned (read-only to the app).
RUN useradd --create-home --uid 10001 --user-group app
COPY . .
USER app

EXPOSE 8000

# Django's development server: good enough for a local stack. Production should put a real WSGI/ASGI
# server (gunicorn, uvicorn) and a static-file server in front instead; neither is in requirements yet.
CMD ["python", "manage.py", "runserver", "0.0.0.0:8000", "--noreload"]
