"""The event bus: topic names, codecs, trace headers, the producer, dead letters.

Import from the modules (``from headwater.shared.bus.topics import Topic``).
"""
