"""The enricher contract and the registry of enrichers by name.

An enricher adds fields to the documents of a batch (GeoIP, key owner). The pipeline calls
:meth:`Enricher.enrich_batch` once per batch, after parsing: one call lets an enricher do its
per-batch housekeeping (reloading a changed file) once, not once per document.

Rules every enricher follows:

- it mutates the nested documents in place and returns nothing;
- it never raises because of a document: a value it cannot use is skipped (or tagged);
- trouble with its own resources (a missing database or key file) is logged when it is found,
  not once per document, and turns the enricher (or the part concerned) off instead of failing.

Each enricher module has a pydantic config model (``extra="forbid"``) and a ``from_config``
factory on the enricher class; :data:`REGISTRY` maps :attr:`Enricher.name` to the class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ingest.registry import registrar


class Enricher(ABC):
    """One enrichment step. Subclasses set :attr:`name` and implement :meth:`enrich_batch`."""

    #: Stable name of the step (registry key, configuration section, log and metric label).
    name: ClassVar[str]

    @abstractmethod
    def enrich_batch(self, docs: list[dict[str, Any]]) -> None:
        """Add fields to every document of ``docs`` that this step applies to. Never raises for a
        bad document."""

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately empty by default
        """Release files or readers. Called once when the pipeline stops; the default does nothing."""


REGISTRY: dict[str, type[Enricher]] = {}

#: Class decorator: make a class the enricher called ``cls.name``.
register = registrar(REGISTRY, "name", "enrichers")
