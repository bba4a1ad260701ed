"""docs/tutorial.md runs as written: its files are extracted and its commands run, in order,
in a fresh folder outside the repository (the page is the test's only source)."""

from __future__ import annotations

import pathlib
import re
import shlex
import subprocess
import sys

import pytest

PAGE = pathlib.Path(__file__).parent.parent / "docs" / "tutorial.md"
_BLOCK = re.compile(r"<!-- (file: (?P<name>\S+)|run) -->\n```\w*\n(?P<body>.*?)```", re.S)


def steps() -> list[tuple[str, str]]:
    """``("file", name + body)`` and ``("run", command)`` steps in page order."""
    out: list[tuple[str, str]] = []
    for m in _BLOCK.finditer(PAGE.read_text()):
        if m.group("name"):
            out.append(("file", m.group("name") + "\n" + m.group("body")))
        else:
            out.extend(("run", line) for line in m.group("body").splitlines() if line.strip())
    return out


def test_the_page_has_files_and_commands():
    kinds = [k for k, _ in steps()]
    assert kinds.count("file") >= 5 and kinds.count("run") >= 8


@pytest.mark.slow
def test_tutorial_runs_end_to_end(tmp_path):
    for kind, text in steps():
        if kind == "file":
            name, _, body = text.partition("\n")
            (tmp_path / name).write_text(body)
            continue
        argv = shlex.split(text)
        if argv[0] == "nasir":
            argv = [sys.executable, "-m", "nasir", *argv[1:]]
        elif argv[0] == "python":
            argv = [sys.executable, *argv[1:]]
        r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{text}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        if text.startswith("nasir show myspace"):
            assert "params" in r.stdout
        if text.startswith("python use_model.py"):
            acc = float(r.stdout.strip().split()[-1])
            assert acc > 0.3, r.stdout  # trained for 2 epochs on 10 classes (chance 0.1)
        if text.startswith("nasir latency"):
            assert "median_ms" in r.stdout
    assert (tmp_path / "exported" / "model.py").exists()
    assert (tmp_path / "runs" / "py" / "run.sqlite").exists()
