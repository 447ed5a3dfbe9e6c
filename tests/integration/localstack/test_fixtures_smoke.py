import asyncpg

from headwater.shared.bus.topics import ALL_TOPICS
from tests.fixtures import eventually


async def test_database_url_is_fresh_and_usable(database_url: str) -> None:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables == 0
        await conn.execute("CREATE TABLE t (x int)")
    finally:
        await conn.close()


async def test_kafka_settings_has_every_topic(kafka_settings) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_settings.bootstrap)
    await consumer.start()
    try:

        async def probe():
            topics = await consumer.topics()
            wanted = {kafka_settings.topic(t) for t in ALL_TOPICS}
            return wanted <= topics

        assert await eventually(probe, timeout_s=10, what="topics visible")
        assert len(consumer.partitions_for_topic(kafka_settings.topic("predictions"))) == 2
    finally:
        await consumer.stop()
