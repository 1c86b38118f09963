"""The hooks every mmdet-family plugin implements the same way, for its entry-point module.

``build_model, apply_npu_patches, npu_patches, baseline_train_step = family_hooks(__package__)``
in a plugin's entry point gives it four ``detcore`` hook implementations bound to that package:

* ``build_model``: ``<package>.model.build(config, num_classes)``;
* ``apply_npu_patches``: ``<package>.patches.apply_all(config, device)``;
* ``npu_patches``: ``<package>.patches.PATCHES`` (what ``apply_all`` applies, in order);
* ``baseline_train_step``: mmengine's own ``train_step``
  (:func:`detcore_mmdet.adapter.baseline_train_step`), what ``detcore bench`` times core's
  ``Trainer.step`` against.

Core calls a model's hooks only on the plugin that registered it, so none checks ``spec``.
Import-light: the plugin's modules, torch and mmdet are imported when a hook is called.
"""
from __future__ import annotations

import importlib

from detcore import hookimpl


def family_hooks(package: str):
    """``(build_model, apply_npu_patches, npu_patches, baseline_train_step)`` hook implementations
    for ``package``."""

    @hookimpl
    def build_model(config, num_classes):
        return importlib.import_module(f"{package}.model").build(config, num_classes)

    @hookimpl
    def apply_npu_patches(config, device):
        return importlib.import_module(f"{package}.patches").apply_all(config, device)

    @hookimpl
    def npu_patches():
        return list(importlib.import_module(f"{package}.patches").PATCHES)

    @hookimpl
    def baseline_train_step(config, model, optimizer):
        from .adapter import baseline_train_step as mmengine_step

        return mmengine_step(model, optimizer, config)

    return build_model, apply_npu_patches, npu_patches, baseline_train_step
