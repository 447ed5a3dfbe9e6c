"""The local stack's servers as child processes: the Tansu broker and PostgreSQL.

``headwater up`` and the test fixtures use these; the services never do (they
only read ``HEADWATER_KAFKA_BOOTSTRAP`` and ``HEADWATER_DATABASE_URL``).
"""

from headwater.cli.localstack.broker import TansuBroker
from headwater.cli.localstack.ports import free_port, wait_until
from headwater.cli.localstack.postgres import EmbeddedPostgres

__all__ = ["EmbeddedPostgres", "TansuBroker", "free_port", "wait_until"]
