"""Whether mmcv was built with NPU kernels is asked of mmcv's extension (``detcore doctor``)."""
from __future__ import annotations

from detcore.testing.npu_sim import simulated_npu  # noqa: F401 (a fixture)


def test_a_cpu_build_has_no_npu_kernels_even_where_torch_npu_imports(simulated_npu):
    """The regression: doctor said "npu" for mmcv whenever torch_npu was importable."""
    import importlib.util

    from detcore_mmdet.adapter import compiled_ops
    from detcore_mmdet.mmcv_ext import kernels

    assert importlib.util.find_spec("torch_npu") is not None  # the simulated one
    found = kernels()
    assert "nms" in found["cpu"] and "npu" not in found
    ok, detail = compiled_ops()
    assert ok and detail.startswith("mmcv 2.1.0 ops compiled for cpu;"), detail
    assert "no NPU kernels (not built with FORCE_NPU=1)" in detail


def test_an_npu_build_is_recognised_by_its_kernels(tmp_path, monkeypatch):
    """An extension whose symbol table holds ``<op>_npu`` kernels (mangled C++ names, as
    ``csrc/pytorch/npu/*.cpp`` compile to) is an NPU build; a name that merely contains the
    text (an error message) or whose length prefix does not match is not a kernel."""
    from detcore_mmdet import adapter, mmcv_ext

    ext = tmp_path / "_ext.so"
    ext.write_bytes(b"\x00_Z7nms_cpuN2at6TensorES0_fi\x00_Z7nms_npuN2at6TensorES0_fi\x00"
                    b"_Z21roi_align_forward_npuN2at6TensorE\x00"
                    b"passed in nms_npu should be float\x00_Z9nms_npuX\x00")
    assert mmcv_ext.kernels(str(ext)) == {"cpu": {"nms"}, "npu": {"nms", "roi_align_forward"}}
    monkeypatch.setattr(mmcv_ext, "extension_path", lambda: str(ext))
    ok, detail = adapter.compiled_ops()
    assert ok and "ops compiled for cpu, npu;" in detail
    assert "2 NPU kernels (nms, roi_align_forward)" in detail
