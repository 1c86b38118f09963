"""ONNX export (torch.onnx), parity check with onnxruntime, and ``.om`` through CANN's ``atc``."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import MissingDependency, UserError


class ExportWrapper(torch.nn.Module):
    """Exposes ``Detector.export_forward`` as ``forward`` for tracing."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, images):
        return self.detector.export_forward(images)


def export_model(ctx, model, path: Path, fmt: str) -> dict:
    """Core's ``export`` hook: ONNX checked with onnxruntime, then ``atc`` for ``om``."""
    ecfg = ctx.config["export"]
    batch = int(ctx.options.batch_size or ecfg["batch_size"])
    # the ONNX file atc converts takes the opset the reference's atc took (export.om_opset)
    key = "om_opset" if fmt == "om" else "opset"
    opset = int(ecfg[key])
    info = export_onnx(model, path, ctx.config["data"]["input_size"], batch, opset,
                       bool(ecfg["dynamic_batch"]), sample=_val_images(ctx, batch),
                       opset_key=f"export.{key}")
    verify(path, info, float(model.export_tolerance))
    artifacts = {"onnx": info["onnx"], "onnx_opset": opset, "onnx_inputs": info["inputs"],
                 "onnx_outputs": info["outputs"]}
    metrics = {f"parity_max_abs_diff_{k}": v for k, v in info["parity_max_abs_diff"].items()}
    metrics["parity_unmatched"] = info["parity_unmatched"]
    metrics["parity_unmatched_above_floor"] = info["parity_unmatched_above_floor"]
    if fmt == "om":
        artifacts.update(convert_om(path, ctx.config["data"]["input_size"], batch,
                                    model.atc_out_nodes or info["outputs"], ecfg.get("soc_version")))
    return {"artifacts": artifacts, "metrics": metrics}


def agrees(info: dict, tolerance: float) -> bool:
    """Do onnxruntime and PyTorch agree (:func:`check_parity`'s ``info``): every matched output
    within ``tolerance`` and no detection scoring at least :data:`SCORE_FLOOR` lost."""
    return (max(info["parity_max_abs_diff"].values(), default=0.0) <= tolerance
            and not info["parity_unmatched_above_floor"])


def verify(path: Path, info: dict, tolerance: float) -> None:
    """Fail the export unless :func:`agrees`; the file is kept beside, as
    ``NAME.onnx.unverified``, for inspection."""
    if agrees(info, tolerance):
        return
    worst = max(info["parity_max_abs_diff"].values(), default=0.0)
    lost = info["parity_unmatched_above_floor"]
    kept = path.with_name(path.name + ".unverified")
    path.replace(kept)
    raise UserError(f"export check failed: onnxruntime and PyTorch disagree on the check images "
                    f"(max abs diff {worst:.3g}, tolerance {tolerance:g}; {lost} detections "
                    f"scoring >= {SCORE_FLOOR} without a counterpart); the file is kept as {kept} "
                    f"for inspection; report it to the plugin's authors")


def _val_images(ctx, batch: int) -> torch.Tensor | None:
    """Real validation images for the parity check (random ones flatter the comparison)."""
    try:
        data = ctx.dataset("val")
    except UserError:
        return None
    samples = [s for s in (data[i] for i in range(min(batch, len(data)))) if s is not None]
    if len(samples) < batch:
        return None
    return torch.stack([s[0] for s in samples]).float() / 255


def check_contract(model, images: torch.Tensor, outputs) -> None:
    """``export_forward``'s outputs against :class:`detcore.model.Detector`'s export contract."""
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    names, (b, _, h, w) = model.export_output_names, images.shape
    k = int(model.max_detections)
    expected = {"dets": ((b, k, 5), torch.float32), "labels": ((b, k), torch.int64),
                "masks": ((b, k, h, w), torch.float32)}
    if len(outputs) != len(names):
        raise UserError(f"{type(model).__name__}.export_forward returned {len(outputs)} outputs; "
                        f"the export contract is {', '.join(names)} (see detcore.model.Detector)")
    for name, out in zip(names, outputs):
        shape, dtype = expected[name]
        if tuple(out.shape) != shape or out.dtype != dtype:
            raise UserError(f"{type(model).__name__}.export_forward output {name} is "
                            f"{tuple(out.shape)} {out.dtype}; the export contract needs {shape} "
                            f"{dtype} (see detcore.model.Detector)")


#: What a failed export suggests for each opset key (``export.om_opset``: the highest opset
#: CANN 6.0's atc documents).
OPSET_HINTS = {"export.opset": 17, "export.om_opset": 13}


def export_onnx(model, path: Path, input_size, batch_size: int, opset: int, dynamic_batch: bool,
                sample: torch.Tensor | None = None, opset_key: str = "export.opset") -> dict:
    """Trace ``model.export_forward`` to ONNX and compare onnxruntime with PyTorch
    (``opset_key``: the config key the opset came from, named when the export fails)."""
    model = model.eval().cpu()
    h, w = (int(v) for v in input_size)
    dummy = sample if sample is not None else torch.rand(batch_size, 3, h, w)
    names = list(model.export_output_names)
    with torch.inference_mode():  # PyTorch's outputs, once: checked, then the reference
        ref = model.export_forward(dummy)
    check_contract(model, dummy, ref)
    axes = {n: {0: "batch"} for n in ["input", *names]} if dynamic_batch else None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.partial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(ExportWrapper(model).eval(), (dummy,), str(tmp), input_names=["input"],
                              output_names=names, opset_version=opset, dynamic_axes=axes,
                              dynamo=False, do_constant_folding=True)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "opset" in first.lower():
                raise UserError(f"ONNX export failed with opset {opset}: {first}; try "
                                f"--set {opset_key}={OPSET_HINTS[opset_key]}") from None
            raise
    _declare_output_shapes(tmp, ref, dynamic_batch)
    tmp.replace(path)
    parity = check_parity(names, path, dummy, ref)
    return {"onnx": str(path), "inputs": {"input": [None if dynamic_batch else batch_size, 3, h, w]},
            "outputs": names, **parity}


def _declare_output_shapes(path: Path, ref, dynamic_batch: bool) -> None:
    """Write the fixed output shapes into the graph (the tracer leaves topk's dims symbolic).

    Consumers such as ``atc`` and the offline-inference contract (``labels [B,100]``,
    ``dets [B,100,5]``) rely on them being declared.
    """
    import onnx

    graph = onnx.load(str(path))
    for output, tensor in zip(graph.graph.output, ref):
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for axis, size in enumerate(tensor.shape):
            dim = dims.add()
            if axis == 0 and dynamic_batch:
                dim.dim_param = "batch"
            else:
                dim.dim_value = int(size)
    onnx.save(graph, str(path))


#: A PyTorch detection whose nearest same-label ONNX detection differs by more than this
#: (pixels or score) has no counterpart: typically one that crossed the last-slot cut-off
#: because scores tied to float precision reorder. Counted, not compared.
MATCH_TOLERANCE = 1.0
#: A PyTorch detection scoring at least this (the default ``eval.score_threshold``) must have an
#: ONNX counterpart; below it, near-ties crossing the last slot are counted, not failed.
SCORE_FLOOR = 0.05


def check_parity(names, path: Path, images: torch.Tensor, ref) -> dict:
    """Run the ONNX file on ``images``; against PyTorch's outputs ``ref`` (named ``names``), report
    the largest abs difference per output over matched detections.

    Detections are matched one to one (same label, nearest box and score) before comparing, so
    two equally scored detections listed in another order are not counted as a difference;
    ``parity_unmatched`` counts those with no counterpart within :data:`MATCH_TOLERANCE`, and
    ``parity_unmatched_above_floor`` those among them scoring at least :data:`SCORE_FLOOR`.
    ``labels`` are not compared as numbers: a detection matches only one of the same label.
    """
    import onnxruntime as ort

    ref = [r.detach().float().numpy() for r in ref]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = [g.astype(np.float32) for g in sess.run(None, {"input": images.numpy()})]
    for name, r, g in zip(names, ref, got):
        if r.shape != g.shape:
            raise UserError(f"exported output {name} has shape {g.shape}, PyTorch gives {r.shape}")
    order, matched = match_detections(dict(zip(names, ref)), dict(zip(names, got)))
    diffs = {}
    for name, r, g in zip(names, ref, got):
        if name == "labels":
            continue
        g = np.stack([g[b][order[b]] for b in range(len(g))])
        r, g = r[matched], g[matched]
        diffs[name] = float(np.abs(r - g).max()) if r.size else 0.0
    scored = ref[0][..., 4] >= SCORE_FLOOR
    return {"parity_max_abs_diff": diffs, "parity_unmatched": int((~matched).sum()),
            "parity_unmatched_above_floor": int((~matched & scored).sum())}


def match_detections(ref: dict, got: dict, tol: float = MATCH_TOLERANCE):
    """For each image, the index in ``got`` of each ``ref`` detection (greedy by score,
    label-aware), and whether that match lies within ``tol`` (pixels and score)."""
    rd, gd, rl, gl = ref["dets"], got["dets"], ref["labels"], got["labels"]
    order = np.zeros(rl.shape, dtype=np.int64)
    matched = np.zeros(rl.shape, dtype=bool)
    for b in range(rd.shape[0]):
        free = np.ones(len(gd[b]), dtype=bool)
        for i in np.argsort(-rd[b][:, 4], kind="stable"):
            distance = np.abs(gd[b] - rd[b][i]).max(axis=1)
            cost = distance + 1e9 * (gl[b] != rl[b][i]) + 1e18 * ~free
            j = int(np.argmin(cost))
            if cost[j] <= tol:
                order[b, i], matched[b, i], free[j] = j, True, False
    return order, matched


def soc_version() -> str | None:
    """The Ascend chip name from ``npu-smi info`` (e.g. ``Ascend310P3``), if there is one."""
    smi = shutil.which("npu-smi")
    if not smi:
        return None
    out = subprocess.run([smi, "info"], capture_output=True, text=True).stdout
    match = re.search(r"\|\s*\d+\s+(\d{3}[A-Z]?\w*)\s+\|", out)
    return f"Ascend{match.group(1)}" if match else None


def atc_command(onnx: Path, output: Path, input_size, batch_size: int, out_nodes, soc: str) -> list[str]:
    """The reference's conversion: ``atc --framework=5 ... --out_node="labels;dets"``."""
    h, w = input_size
    return ["atc", "--framework=5", f"--model={onnx}", f"--output={output}",
            "--input_format=NCHW", f"--input_shape=input:{batch_size},3,{h},{w}", "--log=error",
            f"--soc_version={soc}", f"--out_node={';'.join(out_nodes)}"]


def convert_om(onnx: Path, input_size, batch_size: int, out_nodes, soc: str | None) -> dict:
    if not shutil.which("atc"):
        raise MissingDependency("--format om needs CANN's atc on PATH (install the CANN toolkit "
                                "and source /usr/local/Ascend/ascend-toolkit/set_env.sh); the ONNX "
                                f"file was written to {onnx}")
    soc = soc or soc_version()
    if not soc:
        raise UserError("cannot tell the Ascend chip (npu-smi found none); pass "
                        "--set export.soc_version=Ascend310P3")
    output = onnx.with_name(f"{onnx.stem}_bs{batch_size}")
    cmd = atc_command(onnx, output, input_size, batch_size, out_nodes, soc)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"atc failed ({proc.returncode}): {tail[0]}")
    om = Path(str(output) + ".om")
    # ais_bench returns the .om's outputs by index, in --out_node order: recorded beside it
    om.with_name(om.name + ".json").write_text(json.dumps({"outputs": list(out_nodes)}))
    return {"om": str(om), "atc_command": shlex.join(cmd)}
