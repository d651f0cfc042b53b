"""Fixtures for tests against the real Kafka broker and TimescaleDB.

`make test` starts both with infra/up.sh before pytest runs; these fixtures
fail (never skip) when a service is missing, so a green run always means the
real services were used.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from support import BOOTSTRAP, DATABASE_URL

from observatory.schemas import migrations


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_admin():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    try:
        admin.list_topics(timeout=10)
    except Exception as exc:
        pytest.fail(f"Kafka is not reachable at {BOOTSTRAP} ({exc}); run `make infra-up`")
    return admin


@pytest.fixture(scope="session")
def database_url():
    try:
        with psycopg.connect(DATABASE_URL, connect_timeout=10, autocommit=True) as conn:
            migrations.apply(conn, progress=lambda _: None)
    except psycopg.OperationalError as exc:
        pytest.fail(f"TimescaleDB is not reachable at {DATABASE_URL} ({exc}); run `make infra-up`")
    return DATABASE_URL


@pytest.fixture
def db(database_url):
    """A connection to an empty set of Observatory tables."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrations.empty_data_tables(conn)
        yield conn


@pytest.fixture
def topic(kafka_admin):
    """A fresh 4-partition topic, deleted afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    futures = kafka_admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)])
    futures[name].result(timeout=30)
    yield name
    kafka_admin.delete_topics([name], operation_timeout=30)


@pytest.fixture
def dlq_topic(kafka_admin):
    name = f"test_dlq_{uuid.uuid4().hex[:12]}"
    futures = kafka_admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    futures[name].result(timeout=30)
    yield name
    kafka_admin.delete_topics([name], operation_timeout=30)
