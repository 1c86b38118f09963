#!/usr/bin/env python
"""FCOS's detcore ``--task eval`` next to mmdet's own evaluation of the same weights:
``python plugins/fcos/upstream_eval.py [--help]`` (:func:`detcore_mmdet.upstream.main`)."""
from __future__ import annotations

from detcore_fcos.model import mmdet_model_config
from detcore_mmdet.upstream import main

if __name__ == "__main__":
    main("fcos", mmdet_model_config)
