"""The hooks a detcore plugin implements.

A plugin is a module registered under the ``detcore`` entry-point group that
defines functions decorated with ``detcore.hookimpl`` and named like the specs
below. It implements ``register_models`` and ``build_model``; everything else
has a default in core (``detcore.defaults``) that a plugin may override.

Core calls a model's hooks only on the plugin that declared the model in
``register_models``, then on core's defaults: an implementation never checks
whether ``spec`` is its own (the hooks in :data:`BROADCAST`, ``log_metrics``, run on every
plugin). ``firstresult`` hooks stop at the first result that
is not ``None``; core's defaults are ``trylast``, so the plugin's runs first, and
returning ``None`` hands the call to core's default.

Heavy imports (torch, the upstream library) belong inside the hook bodies, not
at module level: ``detcore plugins`` imports every plugin module and must stay fast.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("detcore")

#: Hooks core calls on every loaded plugin, not only on the model's owner: a tracker plugin
#: (MLflow, Weights & Biases) declares no model, yet logs the runs of every model.
BROADCAST = ("log_metrics",)


@hookspec
def register_models():
    """Declare the models this plugin provides.

    Returns a list of :class:`detcore.spec.ModelSpec`. Called once per process.
    Two plugins declaring the same model name is an error naming both.
    """


@hookspec
def apply_npu_patches(spec, config, device):
    """Apply this plugin's vendored patches for ``spec`` and return them.

    Called before ``build_model`` when patches are enabled (``--patches on``, or
    ``auto`` on an NPU). ``device`` is the ``torch.device`` the run uses, so a patch
    can pick its NPU kernel (``torch_npu``) or its portable fallback.

    Returns the applied :class:`detcore.patching.Patch` objects (core reverts them at
    the end of the run); apply them with :func:`detcore.patching.apply_patches`, which
    reverts those already applied if one fails. Each patch must be reversible and
    numerically equivalent to the code it replaces within the tolerance it states.
    """


@hookspec
def npu_patches(spec):
    """The :class:`detcore.patching.Patch` classes ``apply_npu_patches`` applies for ``spec``,
    in application order, without applying anything (each constructible as ``cls(device)``).

    ``detcore patches`` lists them (targets, the NPU limitation, tolerance, torch_npu ops,
    ``--diff``), and the conformance suite checks that they are what ``apply_npu_patches``
    applies, that their fingerprints match the pinned upstream and that their NPU branches
    call the ``torch_npu`` ops they declare. Keep one tuple of classes that both hooks use.
    """


@hookspec(firstresult=True)
def build_model(spec, config, num_classes):
    """Build the model for ``spec`` with ``num_classes`` foreground classes.

    ``config`` is the resolved config (a nested dict). Returns a
    :class:`detcore.model.Detector` (on CPU; core moves it to the device). Must not
    download anything: load weights only from local paths named in ``config["model"]``.
    """


@hookspec(firstresult=True)
def build_optimizer(spec, config, model, world_size):
    """Return a ``torch.optim.Optimizer`` for ``model``, or ``None`` for core's default.

    ``world_size`` is the number of training processes (for scaling the learning rate,
    e.g. with :func:`detcore.train.optim.scaled_lr`). Core's default reads
    ``config["optimizer"]`` (``name``: sgd|adamw, ``lr``, ``weight_decay``, ``momentum``).
    """


@hookspec(firstresult=True)
def train(ctx):
    """Run training for ``ctx`` (a :class:`detcore.context.RunContext`); return a result dict.

    ``ctx`` holds what the runner resolved: ``init_weights`` and ``finetune`` (start from
    a checkpoint, re-initialising class-count layers), ``resume``, ``world_size``, and a
    config whose ``train.max_steps`` / ``train.eval_after`` already say how long to run and
    whether to evaluate. Core's default (``detcore.train.Trainer``) owns device placement,
    AMP, loss scale, clipping, EMA, checkpoints, resume and FPS. Override only to replace
    the whole loop; return ``{"metrics": {...}, "fps": float, "artifacts": {...}}``.
    """


@hookspec(firstresult=True)
def evaluate(ctx, model, dataset):
    """Evaluate ``model`` on ``dataset`` and return COCO metrics.

    Core's default runs the model over the dataset and scores it with
    pycocotools: keys ``bbox_mAP``, ``bbox_mAP_50``, ... and ``segm_*`` for
    ``segm`` models. Return a dict of floats.
    """


@hookspec(firstresult=True)
def export(ctx, model, path, fmt):
    """Export ``model`` to ``path`` in format ``fmt`` (``onnx`` or ``om``); return artefacts.

    Core's default traces ``Detector.export_forward`` with ``torch.onnx``, checks the
    outputs against the contract of :class:`detcore.model.Detector` and onnxruntime
    against PyTorch, and for ``om`` runs CANN's ``atc``.
    Returns ``{"artifacts": {...}, "metrics": {...}}``.
    """


@hookspec(firstresult=True)
def baseline_train_step(spec, config, model, optimizer):
    """Return ``step(images, targets)``: one training step done the upstream's own way.

    ``detcore bench`` times it side by side with core's loop on the same model,
    data and batch to report detcore's overhead. ``images`` are ``[0, 1]`` floats on
    the device, ``targets`` detcore's target dicts. Implement it with the upstream's
    own training machinery (e.g. effdet's ``DetBenchTrain``, mmengine's
    ``model.train_step``), making the update the upstream's training script makes under
    ``config``'s settings (``train.amp``, ``train.clip_grad``, ``train.ema``), so both sides
    do the same work. Core's default is a bare PyTorch loop over the Detector,
    which ``detcore bench`` labels as such: it measures no upstream.
    """


@hookspec
def log_metrics(ctx, event, step, epoch, metrics):
    """Send a training run's numbers to an experiment tracker. Not ``firstresult``, and called
    on every loaded plugin (:data:`BROADCAST`): TensorBoard and a third-party tracker both run.

    Core's training loop calls it on rank 0 only (never on the other workers of a distributed
    job), with ``event``:

    - ``"start"`` once, ``metrics`` empty: log ``ctx.config`` (the resolved run config) as the
      run's parameters;
    - ``"step"`` every ``train.log_interval`` steps: ``loss``, the loss terms, ``lr``, ``fps``
      (``None`` during the warm-up), ``skipped_steps``, and ``loss_scale`` with AMP;
    - ``"epoch"`` at each epoch's end: the epoch's mean loss terms and ``lr``;
    - ``"eval"`` after each evaluation (``train.eval_every``, ``train.eval_after``): COCO metrics;
    - ``"end"`` once, also when training fails or is interrupted, ``metrics`` empty: flush, close.

    ``step`` is the global optimisation step, ``epoch`` the number of completed epochs (the same
    numbers as ``metrics.jsonl``). Core's default writes TensorBoard event files to
    ``WORK_DIR/tensorboard`` when ``tensorboard`` is installed and ``train.tensorboard`` is on.
    Return nothing. An exception raised here stops the run: a tracker that may fail (a server
    out of reach) should catch and log its own errors.
    """
