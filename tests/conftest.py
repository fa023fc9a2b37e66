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

# A model small enough that a training test takes seconds on 2 cores, with every part of the real one.
TINY_MODEL = ['model.encoder_type=cnn_mamba', 'model.cnn_channels=[8,16]', 'model.cnn_kernel_sizes=[7,5]',
              'model.cnn_strides=[4,4]', 'model.mamba_d_model=16', 'model.mamba_n_layers=1']

@pytest.fixture(scope='session')
def tiny_demo(tmp_path_factory):
    "Small synthetic datasets, preprocessed and prepared: dict(raw=, processed=, downstream=)."
    from pahcl.demo_data import make_circor, make_physionet2016, make_pascal
    from pahcl.preprocess import preprocess
    from pahcl.tasks import prepare
    root = tmp_path_factory.mktemp('tiny_demo')
    make_circor(root/'raw'/'circor', n_patients=(5, 5, 4), seconds=(6, 7), seed=3)
    make_physionet2016(root/'raw'/'physionet2016', n_records={'training-a': (7, 7, (6, 7))}, seed=3)
    make_pascal(root/'raw'/'pascal', n_subjects=(5, 5, 5, 2), files_per_subject=(1, 2), seconds=(4, 5), seed=3)
    preprocess(root/'raw', root/'processed', num_workers=2, progress=False)
    prepare('all', root/'raw', root/'processed', root/'downstream')
    return dict(raw=root/'raw', processed=root/'processed', downstream=root/'downstream')
