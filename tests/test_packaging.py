"""The package as someone installs it: configs travel inside the wheel, README commands drive CI."""
import subprocess, sys, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import make_readme

def test_wheel_ships_configs_and_entry_point(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
                        '-w', str(tmp_path), str(ROOT)], capture_output=True, text=True)
    if r.returncode != 0 and 'No module named' in r.stderr: pytest.skip(f'cannot build a wheel here: {r.stderr[-200:]}')
    assert r.returncode == 0, r.stderr
    whl, = tmp_path.glob('pahcl-*.whl')
    names = zipfile.ZipFile(whl).namelist()
    for f in ['finetune.yaml', 'pretrain.yaml', 'preprocess.yaml'] + \
             [f'tasks/{t}.yaml' for t in ('circor_murmur', 'circor_outcome', 'physionet2016', 'pascal')]:
        assert f'pahcl/configs/{f}' in names, f
    assert 'pahcl/csrc/selective_scan.cpp' in names                  # the scan kernel's C++ source, compiled on first use
    for f in ('pt', 'md', 'json'): assert f'pahcl/weights/pahcl-tiny.{f}' in names   # the shipped encoder and its model card
    ep = next(n for n in names if n.endswith('entry_points.txt'))
    assert 'pahcl = pahcl.cli:main' in zipfile.ZipFile(whl).read(ep).decode()

def test_readme_starts_with_the_two_commands():
    text = (ROOT/'README.md').read_text()
    cmds = make_readme.commands(text)
    head = text.split('\n## ')[0]                     # everything before the first section
    assert cmds['setup'] in head and cmds['test'] in head
    assert 'torch==2.13.0' in cmds['setup'], 'a CPU setup must pin the local CPU torch, or pip fetches the CUDA build'
    assert 'nbdev_test' in cmds['test'] and 'pytest' in cmds['test']

def test_ci_runs_the_readme_commands():
    ci = (ROOT/'.ci'/'run').read_text()
    assert 'make_readme.py --command setup' in ci and 'make_readme.py --command test' in ci
    assert 'make_readme.py --check' in ci and 'nbdev_export' in ci and 'nbdev_clean' in ci

def test_each_chapter_imports_only_from_chapters_above_it():
    "The reading order is the dependency order: a module imports (at the top or inside a function) only modules of earlier chapters."
    import json, re
    nbs = ROOT/'nbs'
    order = {}
    for p in sorted(nbs.glob('[0-9]*.ipynb')):
        m = re.search(r'#\| default_exp (\w+)', p.read_text())
        assert m, f'{p.name} exports no module'
        n, part = re.match(r'(\d+)([a-z]?)_', p.stem).groups()      # 00a, between 00 and 01
        order[m.group(1)] = (int(n), part)
    assert len(set(order.values())) == len(order), 'two chapters share a number'
    for mod, i in order.items():
        src = (ROOT/'pahcl'/f'{mod}.py').read_text()
        deps = set(re.findall(r'from (?:pahcl)?\.(\w+) import', src)) | set(re.findall(r'from pahcl\.(\w+) import', src))
        assert not [d for d in deps if d in order and order[d] >= i], f'{mod} (chapter {i}) imports {sorted(d for d in deps if order.get(d, (-1,)) >= i)}'
