"""The trainer's group-less readers and its changelog topic on the real broker."""

from __future__ import annotations

import pytest

from headwater.services.trainer.learn.updates import UpdateIndex
from headwater.shared.bus.producer import EventProducer
from headwater.shared.errors import Unavailable
from headwater.shared.settings import KafkaSettings
from tests.fixtures import unique_name
from tests.integration.trainer.conftest import CODEC

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def test_the_update_index_refuses_a_missing_topic_instead_of_reading_nothing(
    broker,
) -> None:
    kafka = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=f"{unique_name('none')}.")
    index = UpdateIndex(kafka, "test-index", CODEC, EventProducer(kafka, "test-index"))
    try:
        with pytest.raises(Unavailable):
            await index.start()
    finally:
        await index.stop()
