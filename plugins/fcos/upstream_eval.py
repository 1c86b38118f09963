#!/usr/bin/env python
"""FCOS: detcore ``--task eval`` next to mmdet's own evaluation of the same weights (CPU).

One checkpoint (``--weights``, or a short detcore training run on the synthetic set) and one
COCO root (``--data``, or the synthetic set ``detcore data synth`` writes) are evaluated by
``detcore run --model MODEL --task eval`` and by mmdet itself: mmengine's ``Runner.test()`` with
mmdet's test pipeline and ``CocoMetric``, under two resize policies (``letterbox``: detcore's
input through mmdet's own transforms; ``mmdet``: mmdet's shipped test pipeline at the same
input size). See ``detcore_mmdet.upstream`` for what each policy does. Prints the markdown
table of the README and writes ``WORK/upstream_eval.json``.

    python plugins/fcos/upstream_eval.py [--model MODEL] [--weights CKPT] [--data COCO_ROOT]
                                       [--config NAME] [--set KEY=VALUE ...] [--train-epochs N]
"""
from __future__ import annotations

from detcore_fcos.model import mmdet_model_config
from detcore_mmdet.upstream import main

if __name__ == "__main__":
    main("fcos", mmdet_model_config)
