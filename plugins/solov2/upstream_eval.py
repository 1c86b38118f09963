#!/usr/bin/env python
"""SOLOv2's detcore ``--task eval`` next to mmdet's own evaluation of the same weights:
``python plugins/solov2/upstream_eval.py [--help]`` (:func:`detcore_mmdet.upstream.main`)."""
from __future__ import annotations

from detcore_solov2.model import mmdet_model_config
from detcore_mmdet.upstream import main

if __name__ == "__main__":
    main("solov2-light", mmdet_model_config)
