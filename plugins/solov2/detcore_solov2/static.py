"""Fixed-shape SOLOv2 post-processing and target assignment (shared by the patches and export).

Everything here keeps tensor shapes independent of the data: candidates are a fixed
top-k with a validity mask instead of ``scores > thr`` + ``nonzero``; ground truth is
padded to a fixed count; positive samples live in a fixed number of slots with a
validity mask; reductions that mmdet does in INT64 (``bool.sum()``, ``nonzero().numel()``)
run in int32 or float32. Only ``torch`` is imported at module level.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

#: cv2 (OpenCV 5) resizes at most this many channels in one call.
CV2_MAX_CHANNELS = 128


def float32_region(device: torch.device):
    """Autocast off: mask areas and intersections reach H x W (> fp16's 65504 at COCO sizes)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


# -- prediction -------------------------------------------------------------------
def point_nms(cls_scores: torch.Tensor) -> torch.Tensor:
    """SOLO's 2x2 local-maximum suppression on sigmoid scores (B, C, G, G), as mmdet does it."""
    local_max = F.max_pool2d(cls_scores, 2, stride=1, padding=1)
    keep = local_max[:, :, :-1, :-1] == cls_scores
    return cls_scores * keep


def flatten_levels(mlvl_kernel_preds, mlvl_cls_scores):
    """Per-level (B, E, G, G) kernels and (B, C, G, G) scores -> (B, P, E), (B, P, C).

    Points are ordered level by level, row-major inside a level (mmdet's order).
    """
    kernels = torch.cat([k.permute(0, 2, 3, 1).reshape(k.shape[0], -1, k.shape[1])
                         for k in mlvl_kernel_preds], dim=1)
    scores = torch.cat([s.permute(0, 2, 3, 1).reshape(s.shape[0], -1, s.shape[1])
                        for s in mlvl_cls_scores], dim=1)
    return kernels, scores


def point_strides(num_grids, strides, device=None) -> torch.Tensor:
    """The FPN stride of every point (P,), for the ``sum_masks > stride`` filter."""
    return torch.cat([torch.full((g * g,), float(s), device=device)
                      for g, s in zip(num_grids, strides)])


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), index (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, index[..., None].expand(*index.shape, x.shape[-1]))


def matrix_nms_static(masks, labels, scores, areas, valid, kernel: str = "gaussian",
                      sigma: float = 2.0):
    """mmdet's ``mask_matrix_nms`` decay on fixed-size, score-sorted inputs.

    masks (B, K, HW) binary (float), labels/scores/areas (B, K), valid (B, K) bool with
    every valid entry before every invalid one. Invalid entries neither decay nor are
    decayed by anything, so each valid entry gets exactly the coefficient mmdet computes
    on the valid entries alone. Returns the decayed scores (B, K).
    """
    k = masks.shape[1]
    fm = masks * valid[..., None].to(masks.dtype)
    inter = torch.bmm(fm, fm.transpose(1, 2))
    areas = areas * valid.to(areas.dtype)
    # [b, i, j] = area_j + area_i - inter_ij (mmdet's expanded + expanded.T - inter)
    union = areas[:, None, :] + areas[:, :, None] - inter
    # [i, j] = 1 where i < j (triu(diagonal=1) as a comparison: ONNX's Trilu needs opset 14,
    # and CANN 6.0's atc takes opsets 9-13)
    index = torch.arange(k, device=masks.device)
    upper = (index[:, None] < index[None, :]).float()
    iou = inter / torch.where(union > 0, union, torch.ones_like(union)) * upper
    same = (labels[:, None, :] == labels[:, :, None]) & valid[:, None, :] & valid[:, :, None]
    decay_iou = iou * same.to(iou.dtype) * upper
    compensate = decay_iou.max(dim=1).values  # per column j: max over rows i
    if kernel == "gaussian":
        decay = torch.exp(-1 * sigma * (decay_iou ** 2))
        comp = torch.exp(-1 * sigma * (compensate ** 2))[:, :, None]
        coeff = (decay / comp).min(dim=1).values
    elif kernel == "linear":
        coeff = ((1 - decay_iou) / (1 - compensate[:, :, None])).min(dim=1).values
    else:
        raise NotImplementedError(f"{kernel} kernel is not supported in matrix nms!")
    return scores * coeff


def postprocess(kernels, scores, mask_feats, strides, *, score_thr: float, mask_thr: float,
                filter_thr: float, nms_pre: int, max_per_img: int, kernel: str = "gaussian",
                sigma: float = 2.0):
    """SOLOv2 inference after the head, in fixed shapes.

    kernels (B, P, E), scores (B, P, C) (sigmoid, point-NMSed), mask_feats (B, E, Hf, Wf),
    strides (P,). Follows mmdet's ``SOLOV2Head._predict_by_feat_single``: score threshold,
    dynamic 1x1 conv, ``sum_masks > stride`` filter, maskness, matrix NMS on the top
    ``nms_pre``, ``filter_thr``, top ``max_per_img``. The ``scores > score_thr`` selection
    becomes a top-``nms_pre`` pre-selection with a validity mask, so the result is mmdet's
    whenever at most ``nms_pre`` (point, class) scores pass ``score_thr``.

    Returns ``scores`` (B, N), ``labels`` (B, N) int64 (-1 empty), ``mask_probs``
    (B, N, Hf, Wf) sigmoid masks (zero for empty slots), ``valid`` (B, N) bool, N = max_per_img.
    """
    with float32_region(mask_feats.device):
        return _postprocess(kernels.float(), scores.float(), mask_feats.float(), strides.float(),
                            score_thr=score_thr, mask_thr=mask_thr, filter_thr=filter_thr,
                            nms_pre=nms_pre, max_per_img=max_per_img, kernel=kernel, sigma=sigma)


def _postprocess(kernels, scores, mask_feats, strides, *, score_thr, mask_thr, filter_thr, nms_pre,
                 max_per_img, kernel, sigma):
    b, p, c = scores.shape
    hf, wf = mask_feats.shape[-2:]
    k = min(int(nms_pre), p * c) if nms_pre > 0 else p * c
    top_scores, top_idx = scores.reshape(b, p * c).topk(k, dim=1)
    valid = top_scores > score_thr
    point = torch.div(top_idx, c, rounding_mode="floor")
    labels = top_idx - point * c
    kern = _gather_rows(kernels, point)
    mask_probs = torch.bmm(kern, mask_feats.reshape(b, mask_feats.shape[1], hf * wf)).sigmoid()
    binary = mask_probs > mask_thr
    sum_masks = binary.sum(-1, dtype=torch.int32).to(mask_probs.dtype)  # no INT64 sum
    valid = valid & (sum_masks > strides[point])
    maskness = (mask_probs * binary).sum(-1) / torch.where(valid, sum_masks,
                                                           torch.ones_like(sum_masks))
    rescored = top_scores * maskness
    _, order = torch.where(valid, rescored, torch.full_like(rescored, -1.0)).topk(k, dim=1)
    rescored, valid = rescored.gather(1, order), valid.gather(1, order)
    labels, sum_masks = labels.gather(1, order), sum_masks.gather(1, order)
    binary = _gather_rows(binary.to(mask_probs.dtype), order)
    decayed = matrix_nms_static(binary, labels, rescored, sum_masks, valid, kernel, sigma)
    if filter_thr > 0:
        valid = valid & (decayed >= filter_thr)
    n = min(int(max_per_img), k) if max_per_img > 0 else k
    _, sel = torch.where(valid, decayed, torch.full_like(decayed, -1.0)).topk(n, dim=1)
    valid = valid.gather(1, sel)
    out_scores = torch.where(valid, decayed.gather(1, sel), torch.zeros_like(decayed[:, :n]))
    out_labels = torch.where(valid, labels.gather(1, sel), torch.full_like(labels[:, :n], -1))
    probs = _gather_rows(mask_probs, order.gather(1, sel)) * valid[..., None].to(mask_probs.dtype)
    probs = probs.reshape(b, n, hf, wf)
    if n < max_per_img:  # fewer candidates than output slots: pad with empty ones
        pad = int(max_per_img) - n
        out_scores = torch.cat([out_scores, out_scores.new_zeros(b, pad)], 1)
        out_labels = torch.cat([out_labels, out_labels.new_full((b, pad), -1)], 1)
        valid = torch.cat([valid, valid.new_zeros(b, pad)], 1)
        probs = torch.cat([probs, probs.new_zeros(b, pad, hf, wf)], 1)
    return out_scores, out_labels, probs, valid


def upsample_masks(mask_probs, mask_stride: int, img_shape, ori_shape):
    """mmdet's resize of (B, N, Hf, Wf) mask probabilities: x stride, crop to img, to ori size."""
    hf, wf = mask_probs.shape[-2:]
    up = F.interpolate(mask_probs, size=(hf * mask_stride, wf * mask_stride), mode="bilinear",
                       align_corners=False)[:, :, :img_shape[0], :img_shape[1]]
    if tuple(up.shape[-2:]) != tuple(ori_shape):
        up = F.interpolate(up, size=tuple(ori_shape), mode="bilinear", align_corners=False)
    return up


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes of binary masks (..., H, W) as mmdet's ``mask2bbox`` (x2 = last + 1).

    Empty masks give zero boxes. Fixed shapes, no ``nonzero``: traceable to ONNX.
    """
    h, w = masks.shape[-2:]
    m = masks.to(torch.float32)
    cols = m.amax(dim=-2)  # (..., W): any pixel in that column
    rows = m.amax(dim=-1)  # (..., H)
    xs = torch.arange(w, device=masks.device, dtype=torch.float32)
    ys = torch.arange(h, device=masks.device, dtype=torch.float32)
    x1 = torch.where(cols > 0, xs, torch.full_like(cols, float(w))).amin(-1)
    x2 = (cols * (xs + 1)).amax(-1)
    y1 = torch.where(rows > 0, ys, torch.full_like(rows, float(h))).amin(-1)
    y2 = (rows * (ys + 1)).amax(-1)
    nonempty = (x2 > 0).to(torch.float32)
    return torch.stack([x1 * nonempty, y1 * nonempty, x2, y2], dim=-1)


# -- training targets ---------------------------------------------------------------
def gt_mask_stats(masks_np, mask_stride: int, featmap_size, max_instances: int):
    """Host-side statistics of one image's ground-truth masks, padded to ``max_instances``.

    masks_np: (n, H, W) uint8/bool numpy. Returns CPU tensors: ``count`` (G,) int32 pixel
    counts, ``center_h``/``center_w`` (G,) float32 centres of mass (computed as mmdet's
    ``center_of_mass``: an exact integer moment divided by the float32 count), and
    ``small`` (G, Hf, Wf) uint8 masks downsampled by ``mask_stride`` with
    ``mmcv.imrescale`` (cv2 bilinear, as mmdet does per instance, here in one call per
    128 instances) and pasted top-left on the mask-feature grid. n > G keeps the first G.
    """
    import mmcv
    import numpy as np

    g = int(max_instances)
    hf, wf = int(featmap_size[0]), int(featmap_size[1])
    masks_np = np.asarray(masks_np)[:g]
    n = len(masks_np)
    count = torch.zeros(g, dtype=torch.int32)
    center_h = torch.zeros(g, dtype=torch.float32)
    center_w = torch.zeros(g, dtype=torch.float32)
    small = torch.zeros((g, hf, wf), dtype=torch.uint8)
    if n == 0:
        return count, center_h, center_w, small
    binary = masks_np.astype(bool)
    h, w = binary.shape[-2:]
    rows = binary.sum(axis=2, dtype=np.int64)  # (n, H)
    cols = binary.sum(axis=1, dtype=np.int64)  # (n, W)
    total = rows.sum(axis=1)
    mom_h = (rows * np.arange(h, dtype=np.int64)).sum(axis=1)
    mom_w = (cols * np.arange(w, dtype=np.int64)).sum(axis=1)
    norm = torch.from_numpy(total).float().clamp(min=1e-6)
    count[:n] = torch.from_numpy(total.astype(np.int32))
    center_h[:n] = torch.from_numpy(mom_h).float() / norm
    center_w[:n] = torch.from_numpy(mom_w).float() / norm
    hwn = np.ascontiguousarray(masks_np.astype(np.uint8).transpose(1, 2, 0))
    for lo in range(0, n, CV2_MAX_CHANNELS):
        part = mmcv.imrescale(np.ascontiguousarray(hwn[:, :, lo:lo + CV2_MAX_CHANNELS]),
                              scale=1.0 / mask_stride)
        part = part[:, :, None] if part.ndim == 2 else part
        sh, sw = min(part.shape[0], hf), min(part.shape[1], wf)
        small[lo:lo + part.shape[2], :sh, :sw] = torch.from_numpy(
            np.ascontiguousarray(part[:sh, :sw].transpose(2, 0, 1)))
    return count, center_h, center_w, small


def assign_targets(boxes, labels, valid, center_h, center_w, *, num_classes: int, num_grids,
                   scale_ranges, pos_scale: float, upsampled_size, max_positives: int):
    """SOLOv2 grid assignment for a batch in fixed shapes.

    boxes (B, G, 4), labels (B, G), valid (B, G) bool (real instance with a non-empty mask),
    center_h/center_w (B, G) float32. Same arithmetic as ``SOLOV2Head._get_targets_single``
    (float32 division and truncation per instance and level), vectorised over instances.
    Each (instance, level) has at most 3 x 3 positive cells, so the candidates are a
    fixed (B, L * G * 9) set; the valid ones are packed, in mmdet's order (level,
    instance, row, column), into ``max_positives`` slots.

    Returns a dict: ``labels`` list of (B, G_l * G_l) int32 grids (``num_classes`` =
    background); ``pos`` list of (B, G_l * G_l) bool; ``num_pos`` () int32 (positive cells,
    mmdet's ``num_pos``); ``slot_point`` (B, K) int64 index into the concatenated points;
    ``slot_gt`` (B, K) int64; ``slot_valid`` (B, K) bool; ``dropped`` () int32 (valid
    candidates beyond ``max_positives``, 0 when the result equals mmdet's).
    """
    device = boxes.device
    b, g = labels.shape
    labels = labels.to(torch.int32)
    areas = torch.sqrt((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))
    pos_w = 0.5 * (boxes[..., 2] - boxes[..., 0]) * pos_scale
    pos_h = 0.5 * (boxes[..., 3] - boxes[..., 1]) * pos_scale
    up_h, up_w = upsampled_size
    offs = torch.tensor([-1.0, 0.0, 1.0], device=device)
    gt_index = torch.arange(g, device=device, dtype=torch.int32)
    out_labels, out_pos, cand_point, cand_gt, cand_valid = [], [], [], [], []
    offset = 0
    num_pos = torch.zeros((), dtype=torch.int32, device=device)
    for (lower, upper), grid in zip(scale_ranges, num_grids):
        cell = 1.0 / grid
        hit = valid & (areas >= lower) & (areas <= upper)
        coord_w = torch.div(center_w / up_w, cell, rounding_mode="trunc")
        coord_h = torch.div(center_h / up_h, cell, rounding_mode="trunc")
        top = torch.maximum(torch.div((center_h - pos_h) / up_h, cell, rounding_mode="trunc")
                            .clamp(min=0), coord_h - 1)
        down = torch.minimum(torch.div((center_h + pos_h) / up_h, cell, rounding_mode="trunc")
                             .clamp(max=grid - 1), coord_h + 1)
        left = torch.maximum(coord_w - 1, torch.div((center_w - pos_w) / up_w, cell,
                                                    rounding_mode="trunc").clamp(min=0))
        right = torch.minimum(torch.div((center_w + pos_w) / up_w, cell, rounding_mode="trunc")
                              .clamp(max=grid - 1), coord_w + 1)
        rows = coord_h[..., None, None] + offs[:, None]  # (B, G, 3, 1)
        cols = coord_w[..., None, None] + offs[None, :]  # (B, G, 1, 3)
        ok = (hit[..., None, None] & (rows >= top[..., None, None]) & (rows <= down[..., None, None])
              & (cols >= left[..., None, None]) & (cols <= right[..., None, None]))  # (B, G, 3, 3)
        cells = (rows * grid + cols).clamp(0, grid * grid - 1).to(torch.int64)
        cells = cells.expand(b, g, 3, 3).reshape(b, g * 9)
        ok = ok.reshape(b, g * 9)
        owner = gt_index.repeat_interleave(9)  # (G*9,)
        # label grid: the last instance covering a cell wins, as mmdet's sequential writes
        grid_ids = torch.arange(grid * grid, device=device)
        match = (cells[:, None, :] == grid_ids[None, :, None]) & ok[:, None, :]  # (B, G_l^2, G*9)
        winner = (match.to(torch.int32) * (owner + 1)[None, None, :]).amax(-1) - 1
        pos = winner >= 0
        lab = torch.where(pos, labels.gather(1, winner.clamp(min=0).to(torch.int64)),
                          torch.full_like(winner, num_classes))
        out_labels.append(lab)
        out_pos.append(pos)
        num_pos = num_pos + pos.sum(dtype=torch.int32)
        cand_point.append(cells + offset)
        cand_gt.append(owner.to(torch.int64).expand(b, -1))
        cand_valid.append(ok)
        offset += grid * grid
    cand_point = torch.cat(cand_point, 1)
    cand_gt = torch.cat(cand_gt, 1)
    cand_valid = torch.cat(cand_valid, 1)
    k = int(max_positives)
    dest = cand_valid.to(torch.int32).cumsum(1, dtype=torch.int32) - 1
    keep = cand_valid & (dest < k)
    dest = torch.where(keep, dest, torch.full_like(dest, k)).to(torch.int64)
    slot_point = torch.zeros((b, k + 1), dtype=torch.int64, device=device).scatter_(1, dest, cand_point)
    slot_gt = torch.zeros((b, k + 1), dtype=torch.int64, device=device).scatter_(1, dest, cand_gt)
    slot_valid = torch.zeros((b, k + 1), dtype=torch.bool, device=device).scatter_(1, dest, keep)
    dropped = (cand_valid.sum(dtype=torch.int32) - keep.sum(dtype=torch.int32))
    return {"labels": out_labels, "pos": out_pos, "num_pos": num_pos,
            "slot_point": slot_point[:, :k], "slot_gt": slot_gt[:, :k],
            "slot_valid": slot_valid[:, :k], "dropped": dropped}
