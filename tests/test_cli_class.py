"""The CLI as a class: importable, subclassable, as the README shows."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from cli_helpers import REPO


def test_the_readme_subclass_adds_its_callback_to_the_cli(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "class MyCLI(TLICLI)" in b]
    script = tmp_path / "my_cli.py"
    script.write_text(block, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script), "fit", "--print_config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load(result.stdout)
    callbacks = [c["class_path"] for c in config["trainer"]["callbacks"]]
    assert callbacks[-1] == "lightning.pytorch.callbacks.LearningRateMonitor"
    assert "tli_lightning.callbacks.ExactResume" in callbacks  # the defaults stay
    assert config["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.TensorBoardLogger"
