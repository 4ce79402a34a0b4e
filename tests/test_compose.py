"""docker-compose.yml runs what `make run` runs, proven without a Docker daemon: Debian's docker-compose
validates and resolves the file (`config`), and the resolved services are compared with scripts/run.sh.

- every process `make run` starts is a compose service with the same command and queues;
- a one-shot init service migrates, sets up the schedule, syncs instruments and makes the admin, and every app
  service waits for it to complete;
- every setting of .env.example reaches every app container, and the operator's .env overrides it;
- every long-running service has a healthcheck; Flower is behind basic auth; ports bind to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
IMAGE = "okx-candles:local"
SECRETS = {"SECRET_KEY": "compose-test-secret", "ADMIN_PASSWORD": "compose-test-admin",
           "FLOWER_BASIC_AUTH": "ops:compose-test"}
# The operator's .env of this test: .env.example with one value changed, which must win.
OVERRIDE = ("LOG_LEVEL", "WARNING")

# Programs as run.sh names them (its venv) and as the image does (on PATH).
PROGRAMS = {"$CELERY": "celery", "$PY": "python", ".venv/bin/uvicorn": "uvicorn", ".venv/bin/celery": "celery"}
# Options that say where a process listens, how loud it is or how many processes it forks: a deployment's
# choice (127.0.0.1 on a laptop, 0.0.0.0 in a container), not what the process is.
PLACEMENT = {"--host", "--port", "--address", "--basic-auth", "--loglevel", "--log-level", "--workers",
             "--proxy-headers"}
# Options that take no value.
SWITCHES = {"--collector", "--no-access-log", "--proxy-headers", "--noinput"}


def env_example_settings() -> dict[str, str]:
    """The settings .env.example sets (its commented-out examples are not set)."""
    pairs = (line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if re.match(r"^[A-Z][A-Z0-9_]*=", line))
    return dict(pairs)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[str, Any]:
    """The compose file as `docker-compose config` resolves it, next to a copy of .env.example and an .env."""
    if not os.access(COMPOSE, os.X_OK):
        pytest.skip(f"docker-compose is not installed at {COMPOSE}: `make compose-tool` installs Debian's package")
    folder = tmp_path_factory.mktemp("compose")
    shutil.copy(ROOT / "docker-compose.yml", folder)
    shutil.copy(ROOT / ".env.example", folder)
    name, value = OVERRIDE
    (folder / ".env").write_text(re.sub(rf"(?m)^{name}=.*$", f"{name}={value}", (ROOT / ".env.example").read_text()))
    env = {"PATH": os.environ["PATH"], "HOME": str(folder), **SECRETS}
    done = subprocess.run([COMPOSE, "--profile", "monitoring", "config"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def app_services(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in resolved["services"].items() if s.get("image") == IMAGE}


def run_sh_processes() -> dict[str, list[str]]:
    """name -> command of every `start NAME COMMAND…` in scripts/run.sh (continuation lines joined)."""
    text = (ROOT / "scripts/run.sh").read_text().replace("\\\n", " ")
    return {m.group(1): shlex.split(m.group(2), comments=True)
            for m in re.finditer(r"(?m)^start (\w+) (.+)$", text)}


def normalized(command: list[str] | str) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """(program, positional arguments, options) with the deployment's placement options left out and the
    queues as a set."""
    tokens = shlex.split(command) if isinstance(command, str) else list(command)
    program = PROGRAMS.get(tokens[0], tokens[0])
    positional: list[str] = []
    options: dict[str, Any] = {}
    i = 1
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-"):
            positional.append(token)
        elif "=" in token:
            key, value = token.split("=", 1)
            options[key] = value
        elif token not in SWITCHES and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            options[token] = tokens[i + 1]
            i += 1
        else:
            options[token] = True
        i += 1
    if "-Q" in options:
        options["-Q"] = frozenset(options["-Q"].split(","))
    return program, tuple(positional), {k: v for k, v in options.items() if k not in PLACEMENT}


def test_the_file_is_valid_and_every_app_service_runs_one_image(resolved):
    services = app_services(resolved)
    assert set(services) >= {"init", "web", "collectors", "flush", "worker", "beat", "flower", "status"}
    assert len({s["build"]["context"] for s in services.values()}) == 1  # built once, shared


def test_every_process_make_run_starts_is_a_service_with_the_same_command_and_queues(resolved):
    processes = run_sh_processes()
    services = app_services(resolved)
    assert set(processes) == set(services) - {"init"}
    for name, command in processes.items():
        assert normalized(services[name]["command"]) == normalized(command), name


def test_the_init_service_prepares_everything_once_before_the_app_starts(resolved):
    services = app_services(resolved)
    init = services["init"]
    script = " ".join(init["command"])
    steps = [re.search(rf"manage\.py {step}\b", script) for step in
             ("migrate", "setup_periodic_tasks", "sync_instruments", "ensure_admin")]
    assert all(steps), script
    assert [m.start() for m in steps] == sorted(m.start() for m in steps)  # in this order
    assert init["restart"] == "no"
    assert init["environment"]["ADMIN_PASSWORD"] == SECRETS["ADMIN_PASSWORD"]
    for name, service in services.items():
        if name != "init":
            assert service["depends_on"]["init"] == {"condition": "service_completed_successfully"}, name


def test_every_setting_of_env_example_reaches_every_app_container(resolved):
    settings = env_example_settings()
    name, value = OVERRIDE
    assert name in settings  # the override below is of a real setting
    for service_name, service in app_services(resolved).items():
        environment = service["environment"]
        missing = sorted(set(settings) - set(environment))
        assert missing == [], f"{service_name} lacks {missing}"
        assert environment[name] == value, service_name  # the operator's .env wins over .env.example
        # What the containers' network dictates wins over both.
        assert environment["DATABASE_URL"].startswith("postgres://okx:"), service_name
        assert "@postgres:5432/" in environment["DATABASE_URL"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert environment["DEBUG"] == "false"
        assert environment["SECRET_KEY"] == SECRETS["SECRET_KEY"]


def test_every_long_running_service_has_a_healthcheck(resolved):
    lacking = [name for name, s in resolved["services"].items() if name != "init" and "healthcheck" not in s]
    assert lacking == []


def test_flower_is_behind_basic_auth_and_ports_bind_to_localhost_only(resolved):
    services = resolved["services"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == SECRETS["FLOWER_BASIC_AUTH"]
    published = [(name, port) for name, s in services.items() for port in s.get("ports", [])]
    assert published
    # Short syntax ("127.0.0.1:5555:5555", as docker-compose 1.29 keeps it) or long (host_ip: …).
    hosts = [port["host_ip"] if isinstance(port, dict) else str(port).split(":")[0] for _name, port in published]
    assert set(hosts) == {"127.0.0.1"}, published


def test_the_production_server_serves_collected_static_files():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "manage.py collectstatic --noinput" in dockerfile
    assert "runserver" not in dockerfile
    assert re.search(r'CMD \["uvicorn", "okxproject\.asgi:application"', dockerfile)
