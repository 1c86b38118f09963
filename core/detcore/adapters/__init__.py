"""Glue for plugins built on an upstream framework (imported only by those plugins)."""
