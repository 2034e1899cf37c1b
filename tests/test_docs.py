"""The documentation site builds with --strict (no broken link or reference), and its generated
pages cover what they document."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly_with_every_command_documented(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                           str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    from typer.main import get_command

    from vecdoctor.cli import app

    group = get_command(app)
    names = group.list_commands(group.context_class(group, info_name="vecdoctor"))
    assert len(names) > 20
    for name in names:  # every command, generated from its definition
        assert f"vecdoctor {name}" in cli, name
    assert "--monitor-window" in cli and "--fields" in cli
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "plan_quick" in api and "drift_report" in api
    benchmarks = (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    assert "Machine:" in benchmarks
    assert "id=\"decisions\"" in benchmarks and "zen3-default" in benchmarks
