"""Conformance suite for detcore plugins (``from detcore.testing import ConformanceSuite``)."""
from .conformance import ConformanceSuite

__all__ = ["ConformanceSuite"]
