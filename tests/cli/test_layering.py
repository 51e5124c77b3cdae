"""Imports run one way, and the command line's --help / --version stay light.

The layering itself is checked by import-linter (`lint-imports`, contracts in pyproject.toml, run by
`make test`); the test here runs the same check when import-linter is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from transferdepth.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[2]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom transferdepth.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "print('torch imported' if 'torch' in sys.modules else 'torch not imported')")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_do_not_import_torch(flag):
    out = _run_cli(flag)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out.stderr
    assert lines[-2:] == ["exit 0", "torch not imported"]
    if flag == "--help":
        assert all(name in out.stdout for name in COMMANDS)


def test_a_subcommand_help_imports_only_what_it_needs():
    out = _run_cli("predict", "--help")
    assert "--max-side" in out.stdout and out.stdout.strip().endswith("torch not imported")


def test_the_light_command_list_matches_each_command_module():
    """`COMMANDS` (what --help lists without importing) says what each command module registers."""
    parser = build_parser("*")
    sub = next(a for a in parser._actions if a.dest == "command")
    registered = {a.dest: a.help for a in sub._choices_actions}
    assert registered == COMMANDS


@pytest.mark.skipif(shutil.which("lint-imports") is None and not
                    (Path(sys.executable).parent / "lint-imports").exists(), reason="import-linter not installed")
def test_import_contracts_other_than_pending_ones_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert "-> conventions KEPT" in out.stdout and "Stages: cli -> apps" in out.stdout, out.stdout
    assert "Models do not import weights" in out.stdout and "BROKEN" not in out.stdout, out.stdout
    assert "Core parts are independent of each other KEPT" in out.stdout, out.stdout
