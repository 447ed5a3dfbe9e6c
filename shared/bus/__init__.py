"""The event bus: topic names, codecs, trace headers, the producer, consumers, dead letters.

Every consumer reads :class:`~headwater.shared.bus.records.ConsumedRecord` values
through one :class:`~headwater.shared.bus.record_policy.RecordPolicy`; group
consumers come from :func:`~headwater.shared.bus.consumer.make_consumer`, Faust
apps from :func:`~headwater.shared.bus.faust_app.faust_app`.

Import from the modules (``from headwater.shared.bus.topics import Topic``).
"""
