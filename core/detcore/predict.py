"""Running a trained model on images. :class:`Predictor` is the one path from images in memory
to detections in each image's own pixels; ``--task predict`` draws what it returns into PNGs and
:meth:`detcore.Model.predict` returns it as :class:`Detections`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.layout import IMAGE_SUFFIXES
from .data.transforms import DEFAULT, LetterboxPolicy, letterbox, to_rgb_array
from .errors import UserError

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


@dataclass
class Detections:
    """One image's detections above the score threshold, in the image's own pixels."""

    boxes: np.ndarray  # N x 4 float32, x1 y1 x2 y2, clipped to the image
    scores: np.ndarray  # N float32, best first as the model ranked them
    labels: np.ndarray  # N int64, 0-based class indices
    names: list[str]  # the class name of each detection (the label as text if unnamed)
    masks: np.ndarray | None = None  # N x H x W bool for segm models, else None
    path: str | None = None  # the file the image was read from, if any

    def __len__(self) -> int:
        return len(self.scores)


def image_paths(source: Path, limit: int) -> list[Path]:
    """A single image, a folder of images, or a dataset root: its validation images, the ones
    ``--task eval`` scores (a COCO root's ``val2017/``, sorted; YOLO and VOC: :func:`val_images`)."""
    source = Path(source)
    paths = val_images(source)
    if paths is None:
        if source.is_file():
            return [source]
        folder = source / "val2017" if (source / "val2017").is_dir() else source
        if not folder.is_dir():
            raise UserError(f"--data {source}: not an image, a folder of images or a dataset root")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return paths[:limit] if limit else paths


def val_images(source: Path) -> list[Path] | None:
    """A YOLO dataset's (or its .yaml's) ``val:`` images, or a Pascal VOC dataset's
    ``ImageSets/Main/val.txt`` images, in the order evaluation reads them: the dataset's own
    reader lists them, so predict and eval agree on the split. None for anything else."""
    from .data.layout import detect

    if source.is_file() and source.suffix.lower() not in (".yaml", ".yml"):
        return None
    try:
        layout = detect(source)
    except UserError:
        return None
    if layout == "coco":
        return None
    from .data.voc import read_voc
    from .data.yolo import read_yolo

    raw = {"yolo": read_yolo, "voc": read_voc}[layout](source, "val")
    paths = [raw.image_dir / image["file_name"] for image in raw.dataset["images"]]
    if not paths:
        raise UserError(f"{raw.where}: no validation images to predict on")
    return paths


def read_image(path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (any PIL mode converted); unreadable: a UserError."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return to_rgb_array(im)
    except OSError as exc:
        raise UserError(f"unreadable image {path}: {exc}") from None


def masks_to_original(masks: torch.Tensor, resized_size: tuple[int, int],
                      orig_size: tuple[int, int]) -> torch.Tensor:
    """Canvas masks (N x H x W probabilities or booleans) -> N x h x w bool on the original
    image: the resized image's area of the canvas, scaled back bilinearly, cut at 0.5."""
    if len(masks) == 0:  # interpolate refuses an empty batch
        return torch.zeros((0, *orig_size), dtype=torch.bool)
    nh, nw = resized_size
    cropped = masks[:, :nh, :nw].float()[None].cpu()
    return torch.nn.functional.interpolate(cropped, size=tuple(orig_size), mode="bilinear",
                                           align_corners=False)[0] > 0.5


class Predictor:
    """A loaded model and what it needs to predict: letterbox as the run's config says, run the
    model, map its output back to each image's pixels. Built once, called for any number of
    images (``tasks.load_predictor`` builds it from a run's context)."""

    def __init__(self, model, class_names, input_size, device, threshold: float,
                 policy: LetterboxPolicy = DEFAULT):
        self.model, self.class_names = model.eval(), list(class_names)
        self.input_size = tuple(int(v) for v in input_size)
        self.device, self.threshold, self.policy = device, float(threshold), policy

    def name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray], paths=None,
                 threshold: float | None = None) -> list[Detections]:
        """Detections for HxWx3 uint8 RGB ``images`` (one model call per image: sizes differ)."""
        cut = self.threshold if threshold is None else float(threshold)
        paths = paths or [None] * len(images)
        return [self._one(image, path, cut) for image, path in zip(images, paths)]

    def _one(self, image: np.ndarray, path, cut: float) -> Detections:
        h, w = image.shape[:2]
        canvas, scale = letterbox(image, self.input_size, self.policy)
        tensor = torch.from_numpy(canvas).permute(2, 0, 1)[None].to(self.device).float() / 255
        out = self.model(tensor)[0]
        keep = (out["scores"] >= cut).cpu()
        boxes = self.policy.to_original(out["boxes"].float().cpu()[keep], (h, w), scale)
        labels = out["labels"].cpu()[keep].long().numpy()
        masks = None
        if "masks" in out:
            masks = masks_to_original(out["masks"].cpu()[keep],
                                      self.policy.resized_size(h, w, scale), (h, w)).numpy()
        return Detections(boxes=boxes.numpy().astype(np.float32),
                          scores=out["scores"].float().cpu()[keep].numpy(), labels=labels,
                          names=[self.name(int(label)) for label in labels], masks=masks,
                          path=None if path is None else str(path))


def predict_images(predictor: Predictor, paths, out_dir: Path) -> list[dict]:
    """``--task predict``: each image with its detections drawn, as ``out_dir/STEM.png``; an
    unreadable image is recorded in the summary and skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for path in paths:
        try:
            image = read_image(path)
        except UserError as exc:
            summary.append({"image": str(path), "error": str(exc)})
            continue
        [found] = predictor([image], [path])
        target = out_dir / (Path(path).stem + ".png")
        draw_detections(image, found).save(target)
        summary.append({"image": str(path), "output": str(target), "detections": len(found)})
    return summary


def draw_detections(image: np.ndarray, found: Detections):
    """``image`` with ``found``'s masks blended in and its boxes labelled (a PIL image)."""
    from PIL import Image, ImageDraw

    canvas = image.astype(np.float32)
    if found.masks is not None:
        for mask, label in zip(found.masks, found.labels):
            colour = np.array(PALETTE[label % len(PALETTE)], np.float32)
            canvas[mask] = 0.5 * canvas[mask] + 0.5 * colour
    pil = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for box, label, name, score in zip(found.boxes, found.labels, found.names, found.scores):
        colour = PALETTE[label % len(PALETTE)]
        draw.rectangle([float(v) for v in box], outline=colour, width=2)
        draw.text((float(box[0]) + 2, float(box[1]) + 1), f"{name} {score:.2f}", fill=colour)
    return pil
