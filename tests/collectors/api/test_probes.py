"""Service probes over real sockets: refused, hung and healthy servers, each answered within the deadline."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test import override_settings

from collectors.api.probe_connections import idle_connections
from collectors.api.probes import (
    PROBE_TIMEOUT_S,
    database_check,
    probes_run,
    redis_check,
    services_probe,
)
from tests.collectors.api.servers import closed_port, silent_server


def database_params(port: int) -> dict:
    return {"dbname": "postgres", "user": "postgres", "host": "127.0.0.1", "port": port, "connect_timeout": 2}


@pytest.mark.django_db
def test_the_projects_services_answer():
    probes = services_probe()

    assert {name: (p.up, p.checked, p.error) for name, p in probes.items()} == {
        "database": (True, True, ""), "redis": (True, True, ""), "broker": (True, True, ""),
    }
    assert all(p.latency_ms is not None and p.latency_ms < PROBE_TIMEOUT_S * 1000 for p in probes.values())


def test_refused_connections_fail_at_once_with_the_reason():
    port = closed_port()
    started = time.monotonic()

    probes = probes_run({"database": database_check(database_params(port)),
                         "redis": redis_check(f"redis://127.0.0.1:{port}/0")})

    assert time.monotonic() - started < 1.0
    assert not probes["database"].up
    assert "Connection refused" in probes["database"].error
    assert probes["database"].error.startswith("OperationalError: ")
    assert not probes["redis"].up
    assert "Connection refused" in probes["redis"].error


def test_servers_that_hang_are_reported_at_the_deadline():
    with silent_server() as port:
        started = time.monotonic()
        probes = probes_run({"database": database_check(database_params(port)),
                             "redis": redis_check(f"redis://127.0.0.1:{port}/0")})
        elapsed = time.monotonic() - started

    assert PROBE_TIMEOUT_S - 0.05 <= elapsed < PROBE_TIMEOUT_S + 0.5
    for name in ("database", "redis"):
        # Redis' own 1 s socket timeout may fire first; either way it is a failure, within the deadline.
        assert not probes[name].up
    assert probes["database"] == type(probes["database"])("database", False, None,
                                                          f"no answer within {PROBE_TIMEOUT_S:g} s")


@override_settings(CELERY_BROKER_URL="amqp://guest@127.0.0.1:5672//")
@pytest.mark.django_db
def test_a_broker_that_is_not_redis_is_not_probed_and_says_so():
    broker = services_probe(names=["broker"])["broker"]

    assert (broker.up, broker.checked, broker.error) == (True, False, "not probed: a amqp:// broker, not Redis")


@pytest.mark.django_db
def test_the_database_probe_uses_a_connection_of_its_own():
    # Django's own connection is not used (and may be in a transaction, as here): the probe connects anew.
    before = connection.connection
    assert services_probe(names=["database"])["database"].up
    assert connection.connection is before


# --- the connection /status keeps between its probes ---------------------------------------------------------


@pytest.fixture
def probe_params():
    """The test database's parameters under an application name of this test's own; nothing kept after it."""
    params = {**connection.get_connection_params(), "connect_timeout": 2, "application_name": "probe-reuse-test"}
    yield params
    idle_connections.close_all()


def probe_backends(params: dict) -> list[int]:
    with connection.cursor() as cursor:
        # Inside the test's transaction PostgreSQL would show the activity as first read in it.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        # This worker's database only: parallel workers run the same probes under the same application name.
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
                       [params["application_name"]])
        return sorted(pid for (pid,) in cursor.fetchall())


def backends_once_closed(params: dict, timeout_s: float = 5.0) -> list[int]:
    """The probe backends left once closing has had time to land: a backend exits after its client hangs up."""
    deadline = time.monotonic() + timeout_s
    while (backends := probe_backends(params)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return backends


@pytest.mark.django_db
def test_a_kept_connection_answers_the_next_probes_and_a_new_one_is_not_kept(probe_params):
    kept = database_check(probe_params, reuse_s=60)
    kept()
    [backend] = probe_backends(probe_params)
    kept()
    kept()

    assert probe_backends(probe_params) == [backend]
    idle_connections.close_all()
    database_check(probe_params)()  # /health's probe: a new connection each time, closed after it
    assert backends_once_closed(probe_params) == []


@pytest.mark.django_db
def test_a_kept_connection_that_went_away_is_replaced_without_failing_the_probe(probe_params):
    check = database_check(probe_params, reuse_s=60)
    check()
    [gone] = probe_backends(probe_params)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [gone])
    deadline = time.monotonic() + 5
    while probe_backends(probe_params) == [gone] and time.monotonic() < deadline:
        time.sleep(0.01)

    assert probes_run({"database": check})["database"].up
    [backend] = probe_backends(probe_params)
    assert backend != gone


@pytest.mark.django_db
def test_a_kept_connection_is_made_anew_when_it_is_too_old(probe_params):
    check = database_check(probe_params, reuse_s=0.05)
    check()
    [first] = probe_backends(probe_params)
    time.sleep(0.06)
    check()

    deadline = time.monotonic() + 5
    while first in (backends := probe_backends(probe_params)) and time.monotonic() < deadline:
        time.sleep(0.01)
    [second] = backends
    assert second != first


@pytest.mark.django_db
def test_kept_connections_are_closed_before_django_creates_or_drops_a_database(probe_params):
    database_check(probe_params, reuse_s=60)()
    assert len(probe_backends(probe_params)) == 1

    with connection._nodb_cursor():  # what the test runner opens to drop the test database
        pass

    assert backends_once_closed(probe_params) == []
