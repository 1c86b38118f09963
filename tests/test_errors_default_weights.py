"""Without ``--weights``, eval, predict and export read the checkpoint a default train run saves;
when it is not there, the one-line error names the path looked for and ``--weights``."""
from __future__ import annotations

import pytest

from .conftest import assert_user_error


@pytest.mark.parametrize("task", ["eval", "predict", "export"])
def test_without_weights_the_error_names_the_path_looked_for(run_cli, tmp_path, task):
    # as after `train --work-dir D`: nothing under ./work_dirs, where a default train run saves
    proc = run_cli("run", "--model", "tiny-fcos", "--task", task, "--work-dir", tmp_path / "D")
    looked = tmp_path.resolve() / "work_dirs" / "tiny-fcos" / "train" / "checkpoints" / "last.pt"
    assert_user_error(proc, 2, f"no weights: looked for {looked}", "pass --weights FILE")
