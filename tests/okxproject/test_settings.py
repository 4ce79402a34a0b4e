"""Settings come from the environment, strictly: a bad value stops the process with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from okxproject.env import env_bool, env_choice, env_int, env_list

ROOT = Path(__file__).resolve().parents[2]


def django_check(**env: str) -> subprocess.CompletedProcess:
    """`manage.py check` in a fresh process with the given environment (and no .env of ours)."""
    return manage(["check"], **env)


def manage(args: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"SECRET_KEY", "DEBUG", "LOG_LEVEL", "ALLOWED_HOSTS", "BEHIND_TLS"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=60,
    )


def test_debug_off_without_a_secret_key_refuses_to_start_with_a_clear_message():
    result = django_check(DEBUG="false", SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_debug_off_with_a_secret_key_and_hosts_starts():
    result = django_check(DEBUG="false", SECRET_KEY="x" * 50, ALLOWED_HOSTS="candles.example.com")
    assert result.returncode == 0, result.stderr


def test_debug_off_without_allowed_hosts_refuses_to_start():
    result = django_check(DEBUG="false", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must be set when DEBUG is off" in result.stderr


# check --deploy wants a long key with many distinct characters.
PRODUCTION = {"DEBUG": "false", "SECRET_KEY": "k" * 20 + "Q7-x_9zLmN2pR4tV6wY8aB0cD3eF5gH",
              "ALLOWED_HOSTS": "candles.example.com"}


def test_deploy_check_is_clean_in_production_behind_tls():
    result = manage(["check", "--deploy", "--fail-level", "WARNING"], BEHIND_TLS="true", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_deploy_check_names_what_plain_http_leaves_open():
    result = manage(["check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION)
    assert result.returncode != 0
    for code in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert code in result.stderr


def test_a_garbage_boolean_names_the_variable():
    result = django_check(DEBUG="maybe")
    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("TRUE", True), ("on", True), ("0", False),
                                                ("no", False), ("", False)])
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("SOME_FLAG", raw)
    assert env_bool("SOME_FLAG", not expected) is expected


def test_env_bool_uses_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("SOME_FLAG", raising=False)
    assert env_bool("SOME_FLAG", True) is True


def test_env_int_refuses_text_and_values_below_the_minimum(monkeypatch):
    monkeypatch.setenv("SOME_PORT", "http")
    with pytest.raises(ImproperlyConfigured, match="SOME_PORT='http' is not an integer"):
        env_int("SOME_PORT", 8000)
    monkeypatch.setenv("SOME_PORT", "0")
    with pytest.raises(ImproperlyConfigured, match="below its minimum"):
        env_int("SOME_PORT", 8000, minimum=1)


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("SOME_HOSTS", " a.example, ,b.example ")
    assert env_list("SOME_HOSTS", []) == ["a.example", "b.example"]


def test_env_choice_refuses_an_unknown_value(monkeypatch):
    monkeypatch.setenv("SOME_LEVEL", "LOUD")
    with pytest.raises(ImproperlyConfigured, match="must be one of"):
        env_choice("SOME_LEVEL", "INFO", {"INFO", "DEBUG"})


def test_the_celery_app_is_configured_from_settings_with_its_queues():
    from okxproject.celery import app

    assert {q.name for q in app.conf.task_queues} == {"default", "collectors", "flush", "backfill", "webhooks",
                                                       "storage"}
    assert app.conf.task_default_queue == "default"
    assert app.conf.timezone == "UTC"


def settings_value(name: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "LOG_FORMAT"}}
    result = subprocess.run(
        [sys.executable, "-c", f"from okxproject import settings; print(settings.{name})"],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(("env", "expected"), [
    ({"DEBUG": "true"}, "text"),
    ({"DEBUG": "false", "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "h"}, "json"),
    ({"DEBUG": "false", "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "h", "LOG_FORMAT": "text"}, "text"),
])
def test_logs_are_json_in_production_and_readable_in_development_unless_chosen(env, expected):
    assert settings_value("LOG_FORMAT", **env) == expected
