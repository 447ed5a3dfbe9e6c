"""TansuBroker: ready when it serves metadata, pausable, and never outlives its parent."""

from __future__ import annotations

import pytest

from headwater.cli.localstack import TansuBroker, wait_until
from headwater.cli.localstack.broker import kafka_metadata_ok
from headwater.cli.localstack.ports import pid_alive
from tests.integration.localstack.conftest import assert_dies_with_parent

pytestmark = pytest.mark.integration


def test_start_pause_resume_stop() -> None:
    broker = TansuBroker()
    try:
        broker.start()
        assert broker.is_running()
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert kafka_metadata_ok(broker.host, broker.port)

        broker.pause()
        assert not kafka_metadata_ok(broker.host, broker.port, timeout_s=0.3)
        broker.resume()
        assert wait_until(lambda: kafka_metadata_ok(broker.host, broker.port), 5.0)
    finally:
        broker.stop()
    assert not broker.is_running()
    assert not pid_alive(broker.pid)


def test_kill_then_start_again_on_the_same_port() -> None:
    broker = TansuBroker()
    try:
        broker.start()
        first, port = broker.pid, broker.port
        broker.kill()
        assert not broker.is_running() and first is not None and not pid_alive(first)
        broker.start()
        assert broker.port == port and broker.pid != first
        assert kafka_metadata_ok(broker.host, broker.port)
    finally:
        broker.stop()


def test_paused_broker_still_stops() -> None:
    broker = TansuBroker()
    broker.start()
    broker.pause()
    broker.stop(timeout_s=2)
    assert not broker.is_running()


def test_broker_dies_with_its_parent() -> None:
    script = """
        import sys, time
        from headwater.cli.localstack import TansuBroker
        broker = TansuBroker()
        broker.start()
        print(broker.pid, flush=True)
        time.sleep(60)
        """
    assert_dies_with_parent(script, timeout_s=5.0)
