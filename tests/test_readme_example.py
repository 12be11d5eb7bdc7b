"""The README's "bring your own problem family" example runs as written, across processes."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_examples() -> dict[str, str]:
    text = README.read_text()
    blocks = re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", text, re.S)
    return dict(blocks)


def test_readme_declares_its_example_files():
    assert set(readme_examples()) == {"quickstart.py", "add_method.py", "my_family.py",
                                      "train.py", "solve.py", "newton_sor.py", "autospec.py",
                                      "r2n2.py", "grid_sor.py"}


def test_readme_user_family_trains_saves_loads_and_solves(tmp_path):
    for name, code in readme_examples().items():
        (tmp_path / name).write_text(code)
    # Separate processes: loading must not depend on objects of the training run.
    for script in ("quickstart.py", "add_method.py", "newton_sor.py", "autospec.py", "r2n2.py",
                   "grid_sor.py", "train.py", "solve.py"):
        result = subprocess.run([sys.executable, script], cwd=tmp_path, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "diffusion-jacobi.safetensors").is_file()
    assert "mean Jacobi iterations: learned" in result.stdout
