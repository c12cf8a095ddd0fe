"""Cloud ingest (``edge-trainer serve``): the fleet's samples, alerts, snapshots, statuses and OTA reports from
MQTT into the sample store, each message acknowledged only once it is durable.

Where a message goes::

    broker ──► client.IngestClient (mqtt-ingest thread, manual acks)
                 │ Delivery(topic, payload, generation, mid)
                 ▼
               writer.StoreWriter (store-writer thread): batch → decode.decode() → SampleStore.write_batch()
                 │ stored (blobs fsynced, index committed)
                 ▼
               IngestClient.ack() → PUBACK

Public surface: IngestService (wiring), IngestConfig, decode, subscription_filters, parse_topic.
"""

from __future__ import annotations

from trainer.ingest.config import BrokerConfig, IngestConfig
from trainer.ingest.decode import decode
from trainer.ingest.topics import Kind, TopicError, TopicRef, parse_topic, subscription_filters

__all__ = [
    "BrokerConfig",
    "IngestConfig",
    "Kind",
    "TopicError",
    "TopicRef",
    "decode",
    "parse_topic",
    "subscription_filters",
]
