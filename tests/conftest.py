"""Shared pytest fixtures: the repository root, the real-data folder, and a runner for the `pahcl` program."""
import subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent/'shared'/'data'

@pytest.fixture
def pahcl():
    "Run `python -m pahcl ARGS...` in a subprocess, as a user would; returns the CompletedProcess."
    def run(*args, cwd=None, timeout=600):
        return subprocess.run([sys.executable, '-m', 'pahcl', *map(str, args)], capture_output=True,
                              text=True, cwd=cwd, timeout=timeout)
    return run

@pytest.fixture
def shared_data():
    "The real datasets folder (../shared/data from the repository root); skips the test when absent."
    if not SHARED_DATA.is_dir(): pytest.skip(f'real data not found at {SHARED_DATA}')
    return SHARED_DATA
