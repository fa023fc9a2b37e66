"""Reliability, training side: killed fine-tuning and pretraining runs resume to the same result; bad input to
finetune / evaluate is one line on stderr naming the fix; the same seed gives the same metrics."""
import json, os, random, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import TINY_MODEL

FAST = ['training.num_workers=0', 'training.warmup_epochs=1', 'training.batch_size=16']
SETS = sum([['--set', s] for s in [*TINY_MODEL, *FAST]], [])

def pahcl_args(*a): return [sys.executable, '-m', 'pahcl', *map(str, a)]

def run_killed(args, delays, env=None):
    "Start the command, SIGKILL it after each delay (a fresh start each time, with --resume after the first)."
    killed = 0
    for i, d in enumerate(delays):
        p = subprocess.Popen(args + (['--resume'] if i else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try: p.wait(timeout=d)
        except subprocess.TimeoutExpired: p.send_signal(signal.SIGKILL); p.wait(); killed += 1
    return killed

def test_finetune_killed_then_resumed_equals_uninterrupted(tiny_demo, tmp_path):
    base = ['finetune', '--task', 'physionet2016', '--from-scratch', '--data-dir', tiny_demo['downstream'], '--epochs', '4', '--quiet', *SETS]
    ref = subprocess.run(pahcl_args(*base, '--output-dir', tmp_path/'ref'), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    rng = random.Random(0)
    args = pahcl_args(*base, '--output-dir', tmp_path/'k')
    killed = run_killed(args, [rng.uniform(4, 12) for _ in range(3)])
    done = subprocess.run(args + ['--resume'], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    a = json.loads((tmp_path/'ref'/'physionet2016_downstream'/'final_metrics.json').read_text())
    b = json.loads((tmp_path/'k'/'physionet2016_downstream'/'final_metrics.json').read_text())
    print(f'{killed} kills landed')
    for k in ['test_accuracy', 'test_f1_macro', 'test_auroc', 'test_recording_macc', 'best_epoch', 'epochs_trained']:
        assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), (k, a[k], b[k])
    leftovers = [p.name for p in (tmp_path/'k').rglob('*') if '.tmp' in p.name]
    assert not leftovers, leftovers

def test_pretrain_killed_then_resumed_equals_uninterrupted(tiny_demo, tmp_path):
    base = ['pretrain', '--processed-dir', tiny_demo['processed'], '--epochs', '3', '--max-steps-per-epoch', '3', '--quiet',
            *SETS, '--set', 'projection.hidden_dim=32', '--set', 'projection.output_dim=16']
    ref = subprocess.run(pahcl_args(*base, '--output-dir', tmp_path/'ref'), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    args = pahcl_args(*base, '--output-dir', tmp_path/'k')
    rng = random.Random(1)
    run_killed(args, [rng.uniform(4, 10) for _ in range(2)])
    done = subprocess.run(args + ['--resume'], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    a = json.loads((tmp_path/'ref'/'history.json').read_text()); b = json.loads((tmp_path/'k'/'history.json').read_text())
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b):
        for k in ['train_loss', 'val_loss']: assert ra[k] == pytest.approx(rb[k], rel=1e-5), (k, ra, rb)

def test_bad_input_one_line_each(pahcl, tiny_demo, tmp_path):
    "Each bad input: exit code 2, one line on stderr naming the problem, no traceback."
    from pahcl.config import load_config
    from pahcl.pretrain import pretrain
    from pahcl.training import RunLimits
    pt = tmp_path/'pt'
    pretrain(load_config('pretrain', sets=[*TINY_MODEL, 'projection.hidden_dim=32', 'projection.output_dim=16', 'training.num_workers=0']),
             tiny_demo['processed'], pt, epochs=1, batch_size=16, limits=RunLimits(max_steps_per_epoch=2), quiet=True)
    empty = tmp_path/'empty'/'pascal'; empty.mkdir(parents=True)
    (empty/'task_config.json').write_text((tiny_demo['downstream']/'pascal'/'task_config.json').read_text())
    (tmp_path/'junk.pt').write_bytes(b'not a checkpoint')
    dd = tiny_demo['downstream']
    cases = {
        'missing checkpoint':      (['finetune', '--task', 'pascal', '--pretrained', tmp_path/'nope.pt', '--data-dir', dd], 'nope.pt'),
        'not a checkpoint':        (['finetune', '--task', 'pascal', '--pretrained', tmp_path/'junk.pt', '--data-dir', dd], 'junk.pt'),
        'task folder without CSVs':(['finetune', '--task', 'pascal', '--from-scratch', '--data-dir', tmp_path/'empty'], 'train.csv'),
        'shot ratio > 1':          (['finetune', '--task', 'pascal', '--from-scratch', '--data-dir', dd, '--few-shot', '--shot-ratio', '1.5'], '1.5'),
        'shot ratio 0':            (['finetune', '--task', 'pascal', '--from-scratch', '--data-dir', dd, '--few-shot', '--shot-ratio', '0'], 'ratio'),
        'label map mismatch':      (['finetune', '--task', 'pascal', '--from-scratch', '--data-dir', dd, '--set', 'downstream.label_map={normal: 1, murmur: 0, extrasystole: 2}'], 'label_map'),
        'evaluate a pretraining checkpoint': (['evaluate', '--checkpoint', pt/'best_model.pt', '--task', 'pascal', '--data-dir', dd], 'classifier'),
        'evaluate a missing split folder':   (['evaluate', '--checkpoint', pt/'best_model.pt', '--task', 'pascal', '--data-dir', tmp_path/'none'], 'pahcl prepare'),
    }
    handled = 0
    for name, (args, needle) in cases.items():
        r = pahcl(*args, '--output-dir', tmp_path/'o') if args[0] == 'finetune' else pahcl(*args)
        assert r.returncode == 2, (name, r.returncode, r.stderr[-2000:])
        lines = [l for l in r.stderr.strip().splitlines() if l.startswith('pahcl ')]
        assert len(lines) == 1 and needle in lines[0] and 'Traceback' not in r.stderr, (name, r.stderr[-2000:])
        handled += 1
    print(f'{handled}/{len(cases)} bad training inputs handled')
    assert handled == len(cases)

def test_damaged_cycles_are_reported_and_skipped_in_training(pahcl, tiny_demo, tmp_path):
    """A cycle with NaN and a file that is not numpy at all: pretrain, finetune and evaluate warn, naming each file, and use
    the rest; with `--strict` each of them stops instead: exit 2, one line naming the damaged file."""
    import shutil, warnings
    import numpy as np
    from pahcl.config import load_config
    from pahcl.data import read_split, DataWarning
    from pahcl.evaluate import evaluate
    from pahcl.finetune import finetune
    from pahcl.pretrain import pretrain, pretrain_splits
    from pahcl.training import RunLimits
    dd = tmp_path/'downstream'; shutil.copytree(tiny_demo['downstream']/'pascal', dd/'pascal')     # copies, not links: safe to damage
    tr, _ = read_split(dd/'pascal', 'train'); te, _ = read_split(dd/'pascal', 'test')
    a = np.load(tr.path[0]); a[10] = np.nan; np.save(tr.path[0], a)
    Path(tr.path[1]).write_text('not numpy'); Path(te.path[0]).write_text('not numpy either')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        m = finetune(load_config('finetune', 'pascal', sets=[*TINY_MODEL, *FAST, 'training.num_epochs=1']), from_scratch=True,
                     data_dir=dd, output_dir=tmp_path/'o', quiet=True)
    said = [str(x.message) for x in w if issubclass(x.category, DataWarning)]
    assert any(tr.path[0] in s and 'NaN' in s for s in said) and any(tr.path[1] in s for s in said) and any(te.path[0] in s for s in said), said
    assert m['train_cycles'] == len(tr) - 2 and m['test_cycles'] == len(te) - 1
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        ev = evaluate(tmp_path/'o'/'pascal_downstream'/'final_model.pt', 'pascal', data_dir=dd, output_dir=tmp_path/'ev')
    assert any(te.path[0] in str(x.message) for x in w)
    proc = tmp_path/'processed'; shutil.copytree(tiny_demo['processed'], proc)
    ptr, _, _ = pretrain_splits(proc, 0.1, 42)
    Path(ptr.path.iloc[0]).write_bytes(b'\x00' * 10)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        s = pretrain(load_config('pretrain', sets=[*TINY_MODEL, *FAST, 'projection.hidden_dim=32', 'projection.output_dim=16']),
                     proc, tmp_path/'pt', epochs=1, limits=RunLimits(max_steps_per_epoch=2), quiet=True)
    assert any(str(ptr.path.iloc[0]) in str(x.message) for x in w) and Path(s['best_model']).exists()
    strict = {   # the same damage, --strict: the run stops before training or scoring, naming the first damaged file
        'finetune': (['finetune', '--task', 'pascal', '--from-scratch', '--data-dir', dd, '--output-dir', tmp_path/'os', '--quiet', *SETS], tr.path[0]),
        'evaluate': (['evaluate', '--checkpoint', tmp_path/'o'/'pascal_downstream'/'final_model.pt', '--task', 'pascal', '--data-dir', dd], te.path[0]),
        'ensemble': (['ensemble', '--checkpoints', tmp_path/'o'/'pascal_downstream'/'final_model.pt', '--task', 'pascal', '--data-dir', dd,
                      '--output-dir', tmp_path/'en'], te.path[0]),
        'pretrain': (['pretrain', '--processed-dir', proc, '--output-dir', tmp_path/'pts', '--epochs', '1', '--quiet', *SETS], str(ptr.path.iloc[0]))}
    for name, (args, file) in strict.items():
        r = pahcl(*args, '--strict')
        lines = [l for l in r.stderr.strip().splitlines() if l.startswith('pahcl ')]
        assert r.returncode == 2 and len(lines) == 1 and file in lines[0] and 'Traceback' not in r.stderr, (name, r.returncode, r.stderr[-2000:])
    assert not (tmp_path/'os'/'pascal_downstream'/'final_metrics.json').exists() and not (tmp_path/'pts'/'best_model.pt').exists()

def test_same_seed_same_cycles_splits_and_metrics(tiny_demo, tmp_path):
    "Determinism on CPU: preprocess and prepare twice give byte-identical cycles and task CSVs; the same seed, the same metrics."
    from pahcl.config import load_config
    from pahcl.finetune import finetune
    from pahcl.preprocess import preprocess
    from pahcl.tasks import prepare
    files = {}
    for run in ('a', 'b'):
        preprocess(tiny_demo['raw'], tmp_path/run/'processed', dataset='pascal', num_workers=2, progress=False)
        prepare('pascal', tiny_demo['raw'], tmp_path/run/'processed', tmp_path/run/'downstream', seed=7)
        files[run] = {p.relative_to(tmp_path/run): p.read_bytes() for p in sorted((tmp_path/run).rglob('*'))
                      if p.suffix in ('.npy', '.csv')}
    assert len(files['a']) > 20 and files['a'] == files['b']
    cfg = load_config('finetune', 'pascal', sets=[*TINY_MODEL, *FAST, 'training.num_epochs=2', 'seed=3'])
    m = [finetune(cfg, from_scratch=True, data_dir=tmp_path/'a'/'downstream', output_dir=tmp_path/f'o{i}', quiet=True) for i in (1, 2)]
    for k in ('test_accuracy', 'test_f1_macro', 'test_auroc', 'test_recording_f1_macro', 'best_val_primary', 'best_epoch'):
        assert m[0][k] == m[1][k], (k, m[0][k], m[1][k])
