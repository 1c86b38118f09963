"""Core's ``train`` hook: fit the model with :class:`~detcore.train.trainer.Trainer`, then
evaluate it. Everything the task means (finetune, resume, a fixed step count) is already in
``ctx``, resolved by the runner."""
from __future__ import annotations

import logging

from ..errors import UserError

log = logging.getLogger("detcore")


def train(ctx) -> dict:
    from ..checkpoint import load_checkpoint, load_model_weights
    from .trainer import Trainer, seed_everything

    tcfg = ctx.config["train"]
    seed_everything(int(tcfg["seed"]), bool(tcfg["deterministic"]))
    train_set = ctx.dataset("train", train=True)
    model = ctx.build_model(train_set.num_classes)
    if ctx.init_weights is not None:
        ckpt = load_checkpoint(ctx.init_weights, ctx.spec.checkpoint_globals)
        reset = load_model_weights(model, ckpt, str(ctx.init_weights), finetune=ctx.finetune)
        ctx.artifacts["init_weights"] = str(ctx.init_weights)
        if reset:
            log.info("finetune: re-initialised %d class-dependent tensors: %s", len(reset),
                     ", ".join(reset))
            ctx.artifacts["reinitialised"] = reset
    trainer = Trainer(ctx, model, train_set)
    if ctx.resume:
        if not trainer.ckpt_path.is_file():
            raise UserError(f"--resume: no checkpoint at {trainer.ckpt_path}; start without "
                            f"--resume or pass the --work-dir of the run to continue")
        trainer.resume(trainer.ckpt_path)
    trainer.runlog.start(trainer.global_step, trainer.epoch)
    try:
        stats = trainer.fit()
        metrics = {"steps": stats["steps"], "skipped_steps": stats["skipped_steps"]}
        if stats["final_loss"] is not None:
            metrics["final_loss"] = round(stats["final_loss"], 5)
        if tcfg["eval_after"]:
            metrics.update(trainer.evaluate())
    finally:  # trackers are closed whatever stopped the run
        trainer.runlog.end(trainer.global_step, trainer.epoch)
    artifacts = {"checkpoint": stats["checkpoint"], "metrics_log": str(trainer.runlog.steps_path)}
    if trainer.runlog.evals_path.is_file():
        artifacts["eval_log"] = str(trainer.runlog.evals_path)
    if trainer.cut_at is not None:  # the time cap stopped it: say so, the schedule was not run out
        artifacts["schedule_cut"] = {"reason": "train.max_minutes", "at_step": trainer.cut_at,
                                     "planned_steps": stats["planned_steps"]}
    return {"metrics": metrics, "fps": stats["fps"], "artifacts": artifacts}
