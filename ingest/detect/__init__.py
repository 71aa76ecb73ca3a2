"""Detection rules evaluated on the finished documents of each batch (issue 7).

``DetectionStage(store, config, clock).process_batch(docs, ids=None)`` returns alert documents
as :class:`~ingest.model.IndexAction` (``create`` op, deterministic ids). Rule state lives in a
:class:`DetectionStore`: :class:`RedisDetectionStore` (shared by every worker) or
:class:`MemoryDetectionStore` (``audit-ingest parse``, tests), same semantics.
"""

from ingest.detect.config import BruteForceConfig, DetectionConfig, NewCountryConfig, UnmappedKeyConfig
from ingest.detect.stage import DetectionStage
from ingest.detect.store import (
    DetectionStore,
    DetectionStoreUnavailable,
    MemoryDetectionStore,
    RedisDetectionStore,
)

__all__ = [
    "BruteForceConfig",
    "DetectionConfig",
    "DetectionStage",
    "DetectionStore",
    "DetectionStoreUnavailable",
    "MemoryDetectionStore",
    "NewCountryConfig",
    "RedisDetectionStore",
    "UnmappedKeyConfig",
]
