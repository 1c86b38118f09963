"""The training loop core owns: placement, AMP, clipping, EMA, checkpoints, resume, FPS.

The plugin supplies the model (``build_model``) and may supply the optimizer
(``build_optimizer``); everything else is driven by the config.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import distributed as dist
from ..checkpoint import FORMAT, load_checkpoint, save_checkpoint
from ..errors import UserError
from .amp import NonFiniteLoss, autocast, make_scaler
from .loader import eval_loader, train_loader
from .optim import build_scheduler, default_optimizer
from .runlog import RunLog

log = logging.getLogger("detcore.train")


class TrainingStopped(UserError):
    """Training ended early (non-finite loss); the last good checkpoint is kept."""


class Interrupted(TrainingStopped):
    """Ctrl-C: the step finished, a checkpoint was saved; exit code as for SIGINT."""

    exit_code = 130


class Trainer:
    def __init__(self, ctx, model, dataset):
        self.ctx, self.cfg = ctx, ctx.config
        self.device = ctx.device
        self.rank, self.world_size, self.is_main = ctx.rank, ctx.world_size, ctx.is_main
        self.dataset = dataset
        tcfg = self.cfg["train"]
        self.amp = str(tcfg["amp"])
        self.batch_size = int(self.cfg["data"]["batch_size"])
        self.model = model.to(self.device)
        if self.world_size > 1:
            if self.cfg["train"].get("sync_bn"):
                self.model = self._sync_batchnorm(self.model)
            ids = [self.device.index] if self.device.type != "cpu" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.ddp = self.model
        self.optimizer = (ctx.hooks.build_optimizer(spec=ctx.spec, config=self.cfg, model=self.model,
                                                    world_size=self.world_size)
                          or default_optimizer(self.model, self.cfg, self.world_size))
        self.loader, self.sampler = train_loader(
            dataset, self.batch_size, self._loader_workers(), self.rank, self.world_size,
            int(tcfg["seed"]))
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise UserError(f"the training split has {len(dataset)} images, fewer than one batch "
                            f"of {self.batch_size} per worker; lower data.batch_size")
        self.epochs = int(tcfg["epochs"])
        self.total_steps = self.epochs * self.steps_per_epoch
        if int(tcfg["max_steps"]) > 0:
            self.total_steps = min(self.total_steps, int(tcfg["max_steps"]))
        self.scheduler = build_scheduler(self.optimizer, self.cfg["scheduler"], self.total_steps)
        self.scaler = make_scaler(self.device, self.amp, tcfg["loss_scale"])
        self.ema = None
        if float(tcfg["ema"]) > 0:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(float(tcfg["ema"])),
                                     use_buffers=True)
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.skipped_steps = 0
        self.stop_requested = False
        self.cut_at = None  # the step train.max_minutes stopped the run at, if it did
        self.work_dir = Path(ctx.work_dir)
        self.ckpt_path = self.work_dir / "checkpoints" / "last.pt"
        self.runlog = RunLog(ctx)
        # this epoch's loss terms summed over its steps (after a --resume mid-epoch: the steps since)
        self.epoch_sums: dict[str, torch.Tensor] = {}  # summed on the device, read at epoch end
        self.epoch_steps = 0
        self.val_set = None  # built on the first evaluation

    def _sync_batchnorm(self, model):
        """BatchNorm -> SyncBatchNorm; a model may convert itself (timm's BatchNormAct2d
        keeps its activation that way). On CPU torch has no SyncBatchNorm: skipped."""
        if self.device.type == "cpu":
            if self.is_main:
                log.warning("train.sync_bn ignored on cpu: torch's SyncBatchNorm runs on "
                            "cuda/npu only; each worker keeps its own BN statistics")
            return model
        convert = getattr(model, "convert_sync_batchnorm", None)
        if callable(convert):
            return convert()
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def _loader_workers(self) -> int:
        """``data.workers``, except 0 when CPU ranks already fill every core of this machine.

        Loader processes would then compete with the ranks' compute for the same cores:
        measured with 2 ranks on 2 cores, EfficientDet-D0 scaled 1.61x with 2 loader workers
        per rank and 1.77x with none.
        """
        workers = int(self.cfg["data"]["workers"])
        local_ranks = self.ctx.local_world_size
        fills_cores = 1 < local_ranks and (os.cpu_count() or 1) <= local_ranks
        if workers and self.device.type == "cpu" and fills_cores:
            if self.is_main:
                log.info("data.workers %d -> 0: the %d CPU ranks use every core of this machine",
                         workers, local_ranks)
            return 0
        return workers

    # -- state -------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": FORMAT, "model_name": self.ctx.spec.name, "config": self.cfg,
            "classes": list(self.dataset.class_names), "num_classes": self.dataset.num_classes,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_n_averaged": self.ema.n_averaged if self.ema is not None else None,
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step, "skipped_steps": self.skipped_steps,
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_state(),
                    "python": _python_state()},
        }

    def resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.get("format") != FORMAT or ckpt.get("model_name") != self.ctx.spec.name:
            raise UserError(f"{path} is not a detcore checkpoint of {self.ctx.spec.name}; "
                            f"cannot resume from it")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.module.load_state_dict(ckpt["ema"])
            self.ema.n_averaged.copy_(ckpt["ema_n_averaged"])
        self.epoch, self.step_in_epoch = ckpt["epoch"], ckpt["step_in_epoch"]
        self.global_step, self.skipped_steps = ckpt["global_step"], ckpt["skipped_steps"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        _set_numpy_state(ckpt["rng"]["numpy"])
        _set_python_state(ckpt["rng"]["python"])
        log.info("resumed from %s at epoch %d step %d", path, self.epoch, self.global_step)

    def save(self) -> Path | None:
        if self.is_main:
            save_checkpoint(self.state_dict(), self.ckpt_path)
        dist.barrier()
        return self.ckpt_path

    # -- loop --------------------------------------------------------------
    def fit(self) -> dict:
        """Train to the configured end; Ctrl-C or a non-finite loss stop with a clear message."""
        bar = _progress(self.total_steps, self.global_step, self.is_main and self.ctx.progress)
        restore_sigint = self._stop_on_sigint()
        try:
            stats = self._run(bar)
        except NonFiniteLoss as exc:
            raise TrainingStopped(
                f"{exc} at step {self.global_step + 1} (epoch {self.epoch}); training stopped and "
                f"the last good checkpoint ({self.ckpt_path}) was kept; lower the learning rate or "
                f"use --loss-scale dynamic") from None
        finally:
            bar.close()
            restore_sigint()
        if int(self.cfg["train"]["precise_bn"]) and not self.stop_requested:
            self.recompute_bn()
        self.save()
        if self.stop_requested:
            raise Interrupted(f"interrupted at step {self.global_step}; checkpoint saved to "
                                  f"{self.ckpt_path}; continue with --resume")
        return {**stats, "steps": self.global_step, "epochs_done": self.epoch,
                "skipped_steps": self.skipped_steps, "checkpoint": str(self.ckpt_path)}

    def _run(self, bar) -> dict:
        tcfg = self.cfg["train"]
        minutes = float(tcfg["max_minutes"])
        deadline = time.monotonic() + 60 * minutes if minutes else None
        warmup, log_every = int(tcfg["warmup_fps_steps"]), max(1, int(tcfg["log_interval"]))
        timed_steps, timed_seconds, losses = 0, 0.0, {}
        images_per_step = self.batch_size * self.world_size
        while self.epoch < self.epochs and self.global_step < self.total_steps:
            tick = time.perf_counter()
            for batch in self.batches(self.epoch, skip=self.step_in_epoch * self.batch_size):
                losses = self.step(batch)
                self._add_to_epoch(losses)
                self.step_in_epoch += 1
                self.global_step += 1
                now = time.perf_counter()
                if self.global_step > warmup:
                    timed_steps, timed_seconds = timed_steps + 1, timed_seconds + now - tick
                tick = now
                bar.update(1)
                if self.global_step % log_every == 0 or self.global_step == self.total_steps:
                    fps = _fps(timed_steps, timed_seconds, images_per_step)
                    losses = _floats(losses)  # the one host read-back, every log_interval steps
                    self._log(losses, fps)
                    bar.set_postfix(loss=f"{losses['loss']:.3f}", fps=f"{fps or 0:.1f}")
                out_of_time = deadline is not None and time.monotonic() > deadline
                self.stop_requested, out_of_time = dist.any_rank(
                    [self.stop_requested, out_of_time], self.device)
                if out_of_time and self.global_step < self.total_steps:
                    self.cut_at = self.global_step
                    log.warning("train.max_minutes (%s) reached at step %d of %d: the learning-rate "
                                "schedule, sized for %d steps, was cut there", minutes,
                                self.global_step, self.total_steps, self.total_steps)
                if self.stop_requested or out_of_time or self.global_step >= self.total_steps:
                    break
            else:  # the epoch's data ran out
                self.end_epoch()
                continue
            if self.step_in_epoch >= self.steps_per_epoch:
                self.end_epoch()
            break  # every break above ends training
        return {"fps": _fps(timed_steps, timed_seconds, images_per_step),
                "final_loss": _floats(losses).get("loss"), "planned_steps": self.total_steps}

    def batches(self, epoch: int, skip: int = 0):
        """The training batches of ``epoch`` (after ``skip`` samples), the model in train mode."""
        self.dataset.set_epoch(epoch, int(self.cfg["train"]["seed"]))
        self.sampler.set_epoch(epoch, skip=skip)
        self.ddp.train()
        return (batch for batch in self.loader if batch is not None)

    def end_epoch(self) -> None:
        """Count the epoch, log its mean losses, evaluate (``train.eval_every``) and write its
        checkpoint (``train.checkpoint_every``). Evaluation comes first: the checkpoint then holds
        the random state after it, so ``--resume`` continues as the uninterrupted run does."""
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        means = {k: v / self.epoch_steps for k, v in _floats(self.epoch_sums).items()}
        self.runlog.epoch(self.global_step, self.epoch,
                          {**means, "lr": self.optimizer.param_groups[0]["lr"]})
        self.epoch_sums, self.epoch_steps = {}, 0
        more = self.epoch < self.epochs and self.global_step < self.total_steps
        eval_every = int(self.cfg["train"]["eval_every"])
        if eval_every and self.epoch % eval_every == 0 and more:
            self.evaluate()  # the last epoch's evaluation is train.eval_after's
        every = max(1, int(self.cfg["train"]["checkpoint_every"]))
        if self.epoch % every == 0 and self.epoch < self.epochs:
            self.save()  # the final checkpoint is written by fit()

    def recompute_bn(self) -> None:
        """``train.precise_bn``: recompute the BatchNorm statistics of the weights evaluation
        uses, as a cumulative average over that many training images (not augmented) with the
        weights fixed (torch's ``swa_utils.update_bn``; Detectron2 calls it PreciseBN). The running averages
        training leaves lag weights that were still moving and come from small batches:
        EfficientDet-D0's ``smoke`` run scored bbox mAP@0.5 0.12 with them and 0.77 with
        statistics recomputed at batch 32, the same weights. Under DDP each rank averages its
        share of the images, then the ranks' statistics are averaged."""
        from torch.optim.swa_utils import update_bn
        from torch.utils.data import Subset

        tcfg = self.cfg["train"]
        images = self.ctx.dataset("train")  # the training images without augmentation
        count = min(int(tcfg["precise_bn"]), len(images))
        count -= count % self.world_size  # as many batches on every rank (SyncBatchNorm syncs each)
        model = self.eval_model()
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms or not count:  # (update_bn over no image would leave reset statistics)
            return
        t0 = time.perf_counter()
        loader = eval_loader(Subset(images, range(count)), int(tcfg["precise_bn_batch"]), 0,
                             self.rank, self.world_size)  # this rank's share
        device, amp = self.device, self.amp

        class Forward(torch.nn.Module):  # update_bn calls model(batch[0]): images and targets
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, batch):
                images, targets = to_device(batch, device)
                with torch.no_grad(), autocast(device, amp):
                    self.model(images, targets)

        update_bn(([batch] for batch in loader if batch is not None), Forward())
        if self.world_size > 1:
            for norm in norms:
                for stat in (norm.running_mean, norm.running_var):
                    torch.distributed.all_reduce(stat)
                    stat.div_(self.world_size)
        if self.is_main:
            log.info("train.precise_bn: BatchNorm statistics of %d layers recomputed over %d "
                     "training images in %.1f s", len(norms), count, time.perf_counter() - t0)

    def evaluate(self) -> dict:
        """COCO metrics of :meth:`eval_model` on the validation split (every rank takes part:
        evaluation is sharded), logged as an ``eval`` event."""
        if self.val_set is None:
            self.val_set = self.ctx.dataset("val")
        metrics = self.ctx.hooks.evaluate(ctx=self.ctx, model=self.eval_model(),
                                          dataset=self.val_set)
        self.runlog.eval(self.global_step, self.epoch, metrics)
        return metrics

    def _add_to_epoch(self, losses: dict) -> None:
        for key, value in losses.items():
            self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + value
        self.epoch_steps += 1

    def _stop_on_sigint(self):
        """First Ctrl-C: finish the current step, save, stop. A second one aborts at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            log.warning("interrupt: stopping after this step and saving a checkpoint")

        signal.signal(signal.SIGINT, handler)
        return lambda: signal.signal(signal.SIGINT, previous)

    @property
    def skipped_steps(self) -> int:
        """Steps ``GradScaler`` skipped (non-finite gradients, scale lowered)."""
        return self._skipped_base + int(self._skipped_on_device)

    @skipped_steps.setter
    def skipped_steps(self, value: int) -> None:
        self._skipped_base, self._skipped_on_device = int(value), 0

    def step(self, batch) -> dict:
        """One optimisation step on ``batch`` (uint8 images, targets); returns the losses.

        The losses stay device tensors, and a skipped AMP step is counted on the device: on a
        GPU, reading a value back each step makes the host wait for the whole step, so it cannot
        queue the next one meanwhile (measured on an H200, EfficientDet-D0 at 512, batch 16:
        about 10% of the step time). Values are read every ``train.log_interval`` steps.
        """
        images, targets = to_device(batch, self.device)
        with autocast(self.device, self.amp):
            losses = self.ddp(images, targets)
        loss = sum(losses.values())
        if not isinstance(self.scaler, torch.amp.GradScaler):
            # every rank stops at the same step (a NaN on one rank alone would leave the
            # others waiting in backward's all-reduce until the timeout)
            bad_here = not bool(torch.isfinite(loss).all())
            if dist.any_rank([bad_here], self.device)[0]:
                where = loss.item() if bad_here else "on another rank"
                raise NonFiniteLoss(f"non-finite loss ({where})")
        # no set_to_none argument: torch_npu's fused optimizers (NpuFusedSGD) refuse True
        self.optimizer.zero_grad()
        clip = float(self.cfg["train"]["clip_grad"])
        if self.scaler is None:
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        else:
            # GradScaler's scale tensor (lowered in place when it skips a step), compared on the
            # device: get_scale() would read it back to the host
            scaled = self.scaler.scale(loss)  # (creates GradScaler's scale on its first call)
            scale = getattr(self.scaler, "_scale", None)
            before = scale.clone() if isinstance(scale, torch.Tensor) else None
            scaled.backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if before is not None:
                self._skipped_on_device = self._skipped_on_device + (self.scaler._scale < before).int()
        with warnings.catch_warnings():
            # GradScaler skips a step whose gradients are not finite (on a GPU often the first,
            # while it finds its scale) and the schedule counts it anyway, as effdet's and
            # mmengine's loops do; torch would warn about that first step on every fp16 run
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return {**{k: v.detach() for k, v in losses.items()}, "loss": loss.detach()}

    def _log(self, losses: dict, fps: float | None) -> None:
        if not self.is_main:
            return
        record = {**losses, "lr": self.optimizer.param_groups[0]["lr"], "fps": fps,
                  "skipped_steps": self.skipped_steps}
        if self.scaler is not None:
            record["loss_scale"] = float(self.scaler.get_scale())
        self.runlog.step(self.global_step, self.epoch, record)
        if not self.ctx.progress:
            log.info("step %d/%d loss %.4f lr %.2e fps %s", self.global_step, self.total_steps,
                     losses["loss"], record["lr"], f"{fps:.1f}" if fps else "-")

    def eval_model(self) -> torch.nn.Module:
        """The weights to evaluate: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model


def _floats(values: dict) -> dict:
    return {k: float(v) for k, v in values.items()}


def _fps(steps: int, seconds: float, images_per_step: int) -> float | None:
    return round(steps * images_per_step / seconds, 3) if steps and seconds > 0 else None


def to_device(batch, device):
    """A loader batch on ``device``: images as ``[0, 1]`` floats, target tensors moved."""
    images, targets = batch
    images = images.to(device, non_blocking=True).float().div_(255)
    return images, [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                     for k, v in t.items()} for t in targets]


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step",
                dynamic_ncols=True, leave=False)


def _numpy_state():
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]


def _set_numpy_state(state) -> None:
    name, keys, pos, has_gauss, gauss = state
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _python_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_state(state) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


__all__ = ["Interrupted", "Trainer", "TrainingStopped", "seed_everything", "to_device"]
