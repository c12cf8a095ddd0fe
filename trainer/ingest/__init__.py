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

Public surface: IngestService (threads, status, shutdown; a SideTask runs beside them), status_path,
IngestConfig, decode, subscription_filters, parse_topic.
"""

from __future__ import annotations

from trainer.ingest.config import BrokerConfig, IngestConfig
from trainer.ingest.decode import decode
from trainer.ingest.service import IngestService, ServiceSettings, SideTask, status_path
from trainer.ingest.topics import Kind, TopicError, TopicRef, parse_topic, subscription_filters

__all__ = [
    "BrokerConfig",
    "IngestConfig",
    "IngestService",
    "Kind",
    "ServiceSettings",
    "SideTask",
    "TopicError",
    "TopicRef",
    "decode",
    "parse_topic",
    "status_path",
    "subscription_filters",
]
