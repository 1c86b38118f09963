"""``--task predict``: run a model on images and write PNGs with boxes (and masks) drawn."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data.transforms import letterbox, to_rgb_array
from .errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def image_paths(source: Path, limit: int) -> list[Path]:
    """A single image, a folder of images, or a COCO root (its val2017 images)."""
    source = Path(source)
    if source.is_file():
        return [source]
    folder = source / "val2017" if (source / "val2017").is_dir() else source
    if not folder.is_dir():
        raise UserError(f"--data {source}: not an image, a folder of images or a COCO root")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return paths[:limit] if limit else paths


@torch.inference_mode()
def predict_images(model, paths, input_size, device, class_names, out_dir: Path,
                   threshold: float) -> list[dict]:
    from PIL import Image

    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for path in paths:
        try:
            with Image.open(path) as im:
                image = to_rgb_array(im)
        except OSError as exc:
            summary.append({"image": str(path), "error": f"unreadable: {exc}"})
            continue
        canvas, scale = letterbox(image, input_size)
        tensor = torch.from_numpy(canvas).permute(2, 0, 1)[None].to(device).float() / 255
        out = model(tensor)[0]
        keep = out["scores"] >= threshold
        boxes = (out["boxes"][keep] / scale).cpu().numpy()
        labels, scores = out["labels"][keep].cpu().tolist(), out["scores"][keep].cpu().tolist()
        masks = None
        if "masks" in out and bool(keep.any()):  # interpolate refuses an empty batch
            h, w = image.shape[:2]
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            m = out["masks"][keep][:, :nh, :nw].float()[None].cpu()
            masks = (torch.nn.functional.interpolate(m, size=(h, w), mode="bilinear")[0] > 0.5).numpy()
        target = out_dir / (path.stem + ".png")
        draw_detections(image, boxes, labels, scores, masks, class_names).save(target)
        summary.append({"image": str(path), "output": str(target), "detections": len(labels)})
    return summary


def draw_detections(image: np.ndarray, boxes, labels, scores, masks, class_names):
    from PIL import Image, ImageDraw

    canvas = image.astype(np.float32)
    if masks is not None:
        for mask, label in zip(masks, labels):
            colour = np.array(PALETTE[label % len(PALETTE)], np.float32)
            canvas[mask] = 0.5 * canvas[mask] + 0.5 * colour
    pil = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for box, label, score in zip(boxes, labels, scores):
        colour = PALETTE[label % len(PALETTE)]
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        draw.rectangle([float(v) for v in box], outline=colour, width=2)
        draw.text((float(box[0]) + 2, float(box[1]) + 1), f"{name} {score:.2f}", fill=colour)
    return pil
