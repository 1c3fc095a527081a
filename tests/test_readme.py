"""The README's Python example runs as written (in a subprocess with HOME pointed at a temp dir)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_python_example() -> None:
    assert python_blocks()


def test_readme_python_example_runs(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    for block in python_blocks():
        done = subprocess.run(
            [sys.executable, "-c", block], capture_output=True, text=True, env=env, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip(), "the example should print its result"
