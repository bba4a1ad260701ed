"""The README's Python tour runs as written (keeps the README true)."""

import pathlib
import re


def test_readme_python_tour_runs(capsys):
    text = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "3887038" in out and "'mutation'" in out
