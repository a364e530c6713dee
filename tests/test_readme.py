"""The README's example runs as written, so the first code a newcomer copies works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_example_runs() -> None:
    """The ```python block of README.md runs and prints what it promises."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert 1 == len(blocks)
    done = subprocess.run(
        [sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=30, check=False
    )
    assert 0 == done.returncode, done.stderr
    assert [
        "{'city': 'Paris', 'temp_c': 18}",
        "['Sunny', ' and', ' mild.'] {'output_tokens': 3}",
        "{'report': 'forecast for Paris'}",
        "1.0",
    ] == done.stdout.splitlines()
