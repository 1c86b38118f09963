"""Fixed-shape SOLOv2 training targets and loss, replacing ``SOLOV2Head.loss_by_feat``."""
from __future__ import annotations

import warnings

from detcore.patching import Patch


def _masks_numpy(gt_instances):
    """The instance masks of one image as (n, H, W) numpy (BitmapMasks hold them already)."""
    import numpy as np

    masks = gt_instances.masks
    if hasattr(masks, "masks") and isinstance(masks.masks, np.ndarray):
        return masks.masks
    if hasattr(masks, "to_ndarray"):
        return masks.to_ndarray()
    return masks.detach().cpu().numpy()


def static_loss_by_feat(head, mlvl_kernel_preds, mlvl_cls_preds, mask_feats, batch_gt_instances,
                        batch_img_metas, *, max_instances: int, max_positives: int):
    """mmdet's SOLOv2 loss (dice on positive cells' masks + focal on the grids) in fixed shapes.

    The per-instance Python loop, the per-cell ``torch.zeros`` + copy of mask targets, the
    per-image/level dynamic ``F.conv2d`` and the ``nonzero().numel()`` count become: host-side
    mask statistics (one cv2 call per image), one vectorised assignment over
    ``max_instances`` padded instances, ``max_positives`` slots with a validity mask, one
    batched matmul for all slots' masks and int32 counts. Labels stay int32 and reach the
    focal loss as a float one-hot (no INT64 ``one_hot``).
    """
    import torch

    from .. import static

    device = mask_feats.device
    b = mask_feats.shape[0]
    featmap = mask_feats.shape[-2:]
    g = int(max_instances)
    boxes = torch.zeros((b, g, 4), dtype=torch.float32)
    labels = torch.zeros((b, g), dtype=torch.int32)
    present = torch.zeros((b, g), dtype=torch.bool)
    counts, centers_h, centers_w, smalls = [], [], [], []
    truncated = 0
    for i, gt in enumerate(batch_gt_instances):
        n = min(len(gt.labels), g)
        truncated += len(gt.labels) - n
        boxes[i, :n] = gt.bboxes[:n].detach().float().cpu()
        labels[i, :n] = gt.labels[:n].cpu().to(torch.int32)
        present[i, :n] = True
        count, ch, cw, small = static.gt_mask_stats(_masks_numpy(gt), head.mask_stride, featmap, g)
        counts.append(count)
        centers_h.append(ch)
        centers_w.append(cw)
        smalls.append(small)
    if truncated:
        warnings.warn(f"SOLOv2 static targets: {truncated} ground-truth instances beyond "
                      f"model.max_instances={g} were ignored", stacklevel=2)
    count = torch.stack(counts).to(device, non_blocking=True)
    valid = present.to(device) & (count > 0)
    targets = static.assign_targets(
        boxes.to(device), labels.to(device), valid, torch.stack(centers_h).to(device),
        torch.stack(centers_w).to(device), num_classes=head.num_classes, num_grids=head.num_grids,
        scale_ranges=head.scale_ranges, pos_scale=head.pos_scale,
        upsampled_size=(featmap[0] * head.mask_stride, featmap[1] * head.mask_stride),
        max_positives=max_positives)
    small = torch.stack(smalls).to(device, non_blocking=True)  # (B, G, Hf, Wf) uint8
    dropped = int(targets["dropped"])
    if dropped:
        warnings.warn(f"SOLOv2 static targets: {dropped} positive samples beyond "
                      f"model.max_positives={max_positives} were ignored; raise it",
                      stacklevel=2)

    # dice loss on every slot's mask, weighted by slot validity
    kernels = torch.cat([k.flatten(2) for k in mlvl_kernel_preds], dim=2)  # (B, E, P)
    kernels = kernels.transpose(1, 2)  # (B, P, E)
    if head.dynamic_conv_size != 1:
        raise NotImplementedError("static targets support dynamic_conv_size == 1 only")
    slot_kernels = torch.gather(kernels, 1, targets["slot_point"][..., None]
                                .expand(-1, -1, kernels.shape[-1]))
    feats = mask_feats.flatten(2)  # (B, E, HW)
    # float32 for the dice sums over H x W (fp16 overflows at COCO sizes under autocast)
    mask_preds = torch.bmm(slot_kernels, feats).float()  # (B, K, HW)
    slot_targets = torch.gather(small.flatten(2), 1, targets["slot_gt"][..., None]
                                .expand(-1, -1, feats.shape[-1]))
    k = mask_preds.shape[1]
    weight = targets["slot_valid"].reshape(b * k).to(mask_preds.dtype)
    per_slot = head.loss_mask(mask_preds.reshape(b * k, -1), slot_targets.reshape(b * k, -1),
                              weight=weight, reduction_override="none")
    num_pos = targets["num_pos"].to(torch.float32)
    loss_mask = per_slot.sum() / num_pos.clamp(min=1)

    # focal loss on the class grids (mmdet's order: level, image, cell)
    flatten_labels = torch.cat([lvl.reshape(-1) for lvl in targets["labels"]])
    flatten_cls_preds = torch.cat([p.permute(0, 2, 3, 1).reshape(-1, head.num_classes)
                                   for p in mlvl_cls_preds])
    classes = torch.arange(head.num_classes, device=device, dtype=torch.int32)
    one_hot = (flatten_labels[:, None] == classes[None, :]).to(flatten_cls_preds.dtype)
    loss_cls = head.loss_cls(flatten_cls_preds, one_hot, avg_factor=num_pos + 1)
    return dict(loss_mask=loss_mask, loss_cls=loss_cls)


class StaticTargetsPatch(Patch):
    """Fixed-shape SOLOv2 targets and loss (``SOLOV2Head.loss_by_feat``).

    NPU limitation: mmdet builds SOLOv2's targets with data-dependent shapes (instances per
    level via ``nonzero``, a Python loop per instance and per positive cell, a stack of
    as many mask targets as there are positives, a dynamic ``F.conv2d`` per image and
    level) and counts positives with INT64 sums (``nonzero().numel()``, ``bool.sum()``,
    INT64 centre-of-mass moments), which the Ascend NPU either lacks or recompiles graphs
    for at every step. This patch, after the reference (MAX_LEN-padded ground truth,
    ``pos_inds_mask``, int32 labels), pads ground truth to ``max_instances``, packs the
    positives into ``max_positives`` slots with a validity mask, computes all slots' masks
    with one batched matmul and keeps every count in int32/float32. Mask statistics are
    taken on the host, where the masks already are (mmdet moves them to the device and
    back once per instance).

    Tolerance: losses equal mmdet's within 1e-5 (relative and absolute): the grid
    assignment is bit-identical, only float summation order differs (1x1 dynamic conv as
    matmul, one sum over slots). Exact equivalence needs at most ``max_instances``
    instances per image and ``max_positives`` positive (instance, cell) pairs per image;
    beyond either the patch warns and ignores the excess (as the reference's MAX_LEN did).
    """

    name = "static_targets"
    tolerance = 1e-5
    replaces = {"mmdet.models.dense_heads.solov2_head:SOLOV2Head.loss_by_feat": "6962238368799811"}
    #: the per-image target assignment the vectorised version re-implements
    reproduces = {"mmdet.models.dense_heads.solov2_head:SOLOV2Head._get_targets_single":
                  "de5a83da3515a689"}

    def __init__(self, device=None, max_instances: int = 100, max_positives: int = 512):
        super().__init__(device)
        self.max_instances = int(max_instances)
        self.max_positives = int(max_positives)

    def targets(self):
        from mmdet.models.dense_heads.solov2_head import SOLOV2Head

        max_instances, max_positives = self.max_instances, self.max_positives

        def loss_by_feat(head, mlvl_kernel_preds, mlvl_cls_preds, mask_feats, batch_gt_instances,
                         batch_img_metas, **kwargs):
            return static_loss_by_feat(head, mlvl_kernel_preds, mlvl_cls_preds, mask_feats,
                                       batch_gt_instances, batch_img_metas,
                                       max_instances=max_instances, max_positives=max_positives)

        loss_by_feat.__doc__ = static_loss_by_feat.__doc__
        return [(SOLOV2Head, "loss_by_feat", loss_by_feat)]
