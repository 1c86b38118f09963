"""Which NPU-branch lines the simulated-NPU lane ran: a measurement printed by dev/test.sh.

``python dev/npu_coverage.py DATA_FILE`` reads the combined coverage data of the lane
(``pytest -m npu_sim`` under ``coverage run``, subprocesses included: dev/coverage-npu.ini)
and reports, for every source file of core and the plugins that has NPU code, how many of
its NPU-branch lines ran and which did not. NPU-branch lines are found in the code itself:

* the body of a function whose name says it is the NPU version (``one_hot_npu``,
  ``batch_detection_npu``, ``_fixed_nms_npu``, ``npu_status``: ``npu`` as a word of the name;
  the hooks named after the NPU patches, which run on every device, are not);
* the body of an ``if`` whose condition names the NPU (``if is_npu(self.device):``,
  ``if name == "npu":``, ``if device.type in ("cuda", "npu"):``), not its ``else``; a negated
  condition (``!= "npu"``, ``not``) marks nothing;
* :data:`NPU_PATH`: core functions every ``--device npu`` run goes through whose code does not
  name the NPU (the process group, autocast, the loss scaler, the launcher's device count):
  one line each, their first statement (they ran on the NPU path or not; their error paths
  are tested elsewhere).

:data:`CANNOT_RUN` lists the lines that cannot run under the simulator, with the reason; they
are reported, not counted as missing. The exit status is 1 when any other NPU-branch line did
not run (``--report-only``: always 0).
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Where core's and the plugins' code lives (the simulator itself, detcore.testing, is not
#: the code under test).
SOURCES = ("core/detcore", "plugins/*/detcore_*", "examples/*/detcore_*")
#: ``detcore patches`` (patch_report.py) builds each patch's NPU replacement under the
#: simulator only to list it: a report, not a device path.
EXCLUDE = ("core/detcore/testing/", "core/detcore/patch_report.py")
#: Hooks named after the NPU patches: they run on every device.
HOOK_NAMES = {"apply_npu_patches", "npu_patches"}
#: (file, function) every ``--device npu`` run executes without naming the NPU in its code.
NPU_PATH = (("core/detcore/distributed.py", "init"),
            ("core/detcore/train/amp.py", "autocast"),
            ("core/detcore/train/amp.py", "make_scaler"),
            ("core/detcore/launch.py", "check_nproc"))
#: (file, function or "", a line's stripped text) -> why the simulator cannot run it.
CANNOT_RUN: dict[tuple[str, str, str], str] = {
    ("core/detcore/devices.py", "npu_status",
     'return False, "torch_npu imported but no NPU device is visible"'):
        "the simulated host always shows its NPUs; an Ascend host whose driver sees none does not",
}

_NAMES_NPU = re.compile(r"(^|_)npu($|_)")


def _source_files() -> list[Path]:
    files = sorted({p for pattern in SOURCES for d in REPO.glob(pattern) for p in d.rglob("*.py")})
    return [p for p in files if not any(str(p.relative_to(REPO)).startswith(e) for e in EXCLUDE)]


def _statement_lines(nodes) -> set[int]:
    """Line numbers of the statements in ``nodes`` (nested ones included), as coverage counts
    them: the first line of each statement."""
    lines = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.stmt) and not _is_docstring(sub):
                lines.add(sub.lineno)
    return lines


def _is_docstring(node) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def _names_npu(source: str, test: ast.expr) -> bool:
    text = ast.get_source_segment(source, test) or ""
    return "npu" in text and "!=" not in text and not isinstance(test, ast.UnaryOp) \
        and not re.search(r"\bnot\b", text)


def npu_lines(path: Path) -> dict[int, str]:
    """``{line: region}`` of the NPU-branch statement lines of ``path``."""
    source = path.read_text()
    tree = ast.parse(source)
    rel = str(path.relative_to(REPO))
    explicit = {name for file, name in NPU_PATH if file == rel}
    found: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name in explicit:
                body = [n for n in node.body if not _is_docstring(n)]
                found.setdefault(body[0].lineno, node.name)
            elif _NAMES_NPU.search(node.name) and node.name not in HOOK_NAMES:
                for line in _statement_lines(node.body):
                    found.setdefault(line, node.name)
        elif isinstance(node, ast.If) and _names_npu(source, node.test):
            where = f"if {ast.get_source_segment(source, node.test)}"
            for line in _statement_lines(node.body):
                found.setdefault(line, where)
    return found


def _cannot_run(rel: str, lines_text: list[str], line: int, region: str) -> str | None:
    text = lines_text[line - 1].strip()
    for (file, func, stmt), why in CANNOT_RUN.items():
        if file == rel and func in ("", region) and stmt == text:
            return why
    return None


def report(data_file: str) -> int:
    from coverage import CoverageData

    data = CoverageData(data_file)
    data.read()
    measured = {str(Path(f).resolve()): set(data.lines(f) or ()) for f in data.measured_files()}
    missing_total, excused_total, total, excused = 0, 0, 0, []
    rows = []
    for path in _source_files():
        lines = npu_lines(path)
        if not lines:
            continue
        rel = str(path.relative_to(REPO))
        ran = measured.get(str(path.resolve()), set())
        text = path.read_text().splitlines()
        missing, cannot = [], 0
        for line, region in sorted(lines.items()):
            if line in ran:
                continue
            why = _cannot_run(rel, text, line, region)
            if why:
                cannot += 1
                excused.append(f"{rel}:{line} ({region}): {why}")
            else:
                missing.append(line)
        total += len(lines)
        missing_total += len(missing)
        excused_total += cannot
        rows.append((rel, len(lines), len(lines) - len(missing) - cannot, missing))
    width = max(len(r[0]) for r in rows)
    print("\nNPU-branch lines run by the simulated-NPU lane (dev/npu_coverage.py)")
    print(f"{'file':<{width}}  lines  ran  not run")
    for rel, n, ok, missing in rows:
        print(f"{rel:<{width}}  {n:>5}  {ok:>3}  {', '.join(map(str, missing)) or '-'}")
    ran = total - missing_total - excused_total
    print(f"{'TOTAL':<{width}}  {total:>5}  {ran:>3}  ({100 * ran / max(total, 1):.1f}% ran; "
          f"{missing_total} not run, {excused_total} cannot run under the simulator)")
    for line in excused:
        print(f"cannot run under the simulator: {line}")
    _portable_patches(data_file, {REPO / r[0] for r in rows})
    return 1 if missing_total else 0


def _portable_patches(data_file: str, with_npu_branch: set[Path]) -> None:
    """The patch modules without an NPU branch (the same code on every device), with the share
    of their statements the lane ran (the end-to-end runs apply them on ``npu:0``)."""
    from coverage import Coverage

    cov = Coverage(data_file=data_file)
    cov.load()
    for path in _source_files():
        if "patches" not in path.parts and path.name != "patches.py" or path in with_npu_branch \
                or path.name == "__init__.py":
            continue
        _, statements, _, missing, _ = cov.analysis2(str(path))
        ran = len(statements) - len(missing)
        print(f"no NPU branch (same code on every device): {path.relative_to(REPO)}: "
              f"{ran}/{len(statements)} statements ran")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_file", help="combined coverage data of the lane")
    parser.add_argument("--report-only", action="store_true", help="exit 0 whatever ran")
    args = parser.parse_args()
    status = report(args.data_file)
    return 0 if args.report_only else status


if __name__ == "__main__":
    sys.exit(main())
