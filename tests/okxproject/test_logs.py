"""Log lines carry their context: JSON in production, key=value pairs in development."""

from __future__ import annotations

import asyncio
import io
import logging
import logging.config
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from celery import Celery
from django.conf import settings

from okxproject.logs import log_context, logging_config


@pytest.fixture
def capture():
    """`capture(fmt)` routes the root logger through the project's config into a string buffer."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level

    def configure(fmt: str) -> io.StringIO:
        logging.config.dictConfig(logging_config(level="INFO", fmt=fmt))
        stream = io.StringIO()
        root.handlers[0].setStream(stream)
        return stream

    yield configure
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_json_lines_hold_the_message_level_logger_and_bound_context(capture):
    stream = capture("json")
    with log_context(request_id="req-1"), log_context(inst_id="BTC-USDT", bar="1m"):
        logging.getLogger("collectors.test").warning("filled %d candles", 300, extra={"gap_id": 7})
    logging.getLogger("collectors.test").info("outside")

    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["ts"].endswith("Z")
    assert {k: first[k] for k in ("level", "logger", "message", "request_id", "inst_id", "bar", "gap_id")} == {
        "level": "WARNING", "logger": "collectors.test", "message": "filled 300 candles",
        "request_id": "req-1", "inst_id": "BTC-USDT", "bar": "1m", "gap_id": 7,
    }
    assert second["message"] == "outside"
    assert "request_id" not in second


def test_json_lines_keep_a_traceback_as_one_field(capture):
    stream = capture("json")
    try:
        raise ValueError("bad frame")
    except ValueError:
        logging.getLogger("x").exception("parse failed")
    (entry,) = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert entry["message"] == "parse failed"
    assert "ValueError: bad frame" in entry["exc"]


def test_readable_lines_put_the_context_after_the_message(capture):
    stream = capture("text")
    with log_context(inst_id="ETH-USDT", bar="1H"):
        logging.getLogger("collectors.backfill").info("gap filled")
    line = stream.getvalue().strip()
    assert line.endswith("INFO collectors.backfill gap filled  inst_id=ETH-USDT bar=1H")


def test_concurrent_tasks_each_keep_their_own_context(capture):
    stream = capture("json")

    async def work(name: str) -> None:
        with log_context(channel=name):
            await asyncio.sleep(0.01)
            logging.getLogger("w").info(name)

    async def main() -> None:
        await asyncio.gather(*(work(f"c{i}") for i in range(5)))

    asyncio.run(main())
    entries = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert sorted((e["message"], e["channel"]) for e in entries) == [(f"c{i}", f"c{i}") for i in range(5)]


def test_lines_logged_by_a_celery_task_name_the_task_and_its_id(capture):
    from okxproject.celery import app

    @app.task(name="tests.log_something")
    def log_something() -> None:
        logging.getLogger("collectors.tasks").info("working")

    stream = capture("json")
    result = log_something.apply(task_id="task-42")

    assert result.successful()
    (entry,) = (orjson.loads(line) for line in stream.getvalue().splitlines() if '"working"' in line)
    assert (entry["task"], entry["task_id"]) == ("tests.log_something", "task-42")
    logging.getLogger("after").info("done")
    assert "task_id" not in orjson.loads(stream.getvalue().splitlines()[-1])


@pytest.mark.django_db
def test_gap_detection_lines_name_the_instrument_and_bar(capture, instrument):
    from datetime import timedelta

    from django.utils import timezone

    from candles.models import Subscription, Timeframe
    from collectors.repair.detect import gaps_detect

    stream = capture("json")
    now = timezone.now()
    sub = Subscription.objects.create(instrument=instrument("ADA-USDT", listed_at=now - timedelta(days=1)),
                                      timeframe=Timeframe.objects.get(code="1H"))
    assert gaps_detect(subscription_id=sub.pk, now=now)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert lines
    assert all((line["inst_id"], line["bar"]) == ("ADA-USDT", "1H") for line in lines)


def worker_log(log_tasks: str, tmp_path, redis_url: str) -> str:
    """A real Celery worker of the project, given one task that succeeds and one it does not know, stopped once
    both are handled; its whole output."""
    queue = f"logs-{uuid.uuid4().hex[:8]}"
    log = tmp_path / f"worker-{log_tasks}.log"
    env = {**os.environ, "LOG_TASKS": log_tasks, "LOG_FORMAT": "text", "LOG_LEVEL": "INFO",
           "CELERY_BROKER_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    root = Path(__file__).resolve().parents[2]
    with log.open("w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "okxproject", "worker", "-Q", queue,
                                   "-n", f"{queue}@%h", "--pool", "solo", "--loglevel", "INFO"],
                                  cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while " ready." not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        sender = Celery(broker=redis_url)
        sender.send_task("celery.accumulate", args=[1, 2], queue=queue)
        sender.send_task("no.such.task", queue=queue)
        while "no.such.task" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(0.5)  # the tasks are handled in order: the first one's lines are out by now
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return log.read_text()


def test_a_worker_logs_start_up_and_errors_but_no_line_per_task_unless_asked(tmp_path):
    quiet = worker_log("false", tmp_path, settings.REDIS_URL)
    loud = worker_log("true", tmp_path, settings.REDIS_URL)

    assert " ready." in quiet  # start-up and errors still show
    assert "unregistered task" in quiet.lower()
    assert "celery.accumulate" not in quiet
    assert "Task celery.accumulate" in loud
    assert "succeeded in" in loud
