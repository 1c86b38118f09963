#!/usr/bin/env python
"""FCOS: detcore ``--task eval`` next to mmdet's own evaluation (mmengine's ``Runner.test()``
with mmdet's test pipeline and ``CocoMetric``) of the same weights on the same images, on CPU.
How it runs: :func:`detcore_mmdet.upstream.main`; the resize policies: :mod:`detcore_mmdet.upstream`.

    python plugins/fcos/upstream_eval.py [--help]
"""
from __future__ import annotations

from detcore_fcos.model import mmdet_model_config
from detcore_mmdet.upstream import main

if __name__ == "__main__":
    main("fcos", mmdet_model_config)
