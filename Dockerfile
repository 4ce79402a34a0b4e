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
# Static files (the admin's, the chart's, the API docs') collected into STATIC_ROOT at build time: the app serves
# them (SERVE_STATIC) and a proxy in front can serve the same folder instead.
RUN python manage.py collectstatic --noinput --verbosity 0
USER app

EXPOSE 8000

# The production server: the ASGI app on uvicorn (compose gives each service its own command).
CMD ["uvicorn", "okxproject.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--ws", "websockets-sansio", \
     "--lifespan", "off", "--no-access-log", "--proxy-headers"]
