"""Reliability of the data side: a corpus of bad input through `pahcl datasets`, `preprocess`
and `prepare` (and `read_split` / `CycleDataset` for cycle-level damage); `kill -9` of `preprocess` and
`prepare` at seeded random moments, then a re-run that must give byte-identical outputs; and the same
seed giving the same cycles and the same task CSVs.

Fields ignored when comparing runs (they describe the run, not the data): `seconds` and
`datasets.<name>.skipped_already_done` in processing_stats.json, and `seconds` in `.status/*.json`."""
import hashlib, json, os, re, shutil, signal, subprocess, sys, time, warnings
from collections import Counter
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy.signal import resample_poly
from pahcl.demo_data import make_physionet2016
from pahcl.data import DataError, CycleDataset, check_cycles, read_split
from pahcl.tasks import PrepareError, prepare, read_task_csv

HANDLED = Counter()          # bad-input cases tried -> handled (asserted per test, totalled at the end)
TRIED = Counter()

def pahcl(*args, timeout=300):
    return subprocess.run([sys.executable, '-m', 'pahcl', *map(str, args)], capture_output=True, text=True, timeout=timeout)

def no_traceback(r):
    assert 'Traceback' not in r.stderr and 'Traceback' not in r.stdout, r.stderr[-3000:]

# ------------------------------------------------------------------ the corpus
# Each case replaces one recording of a valid PhysioNet 2016 folder (its .hea removed, as the header would no
# longer describe the file). expect: 'datasets' = reported when the folder is read; 'failed' = reported by
# preprocess with this reason; 'done' = unusual but valid, processed; 'any' = processed or reported.
def _cases(x, sr):
    n = len(x)
    return [
        ('truncated WAV header', 'datasets', 'not a readable audio file', lambda p: p.write_bytes(p.read_bytes()[:30])),
        ('zero-byte file', 'datasets', 'empty file (0 bytes)', lambda p: p.write_bytes(b'')),
        ('text file named .wav', 'datasets', 'not a readable audio file', lambda p: p.write_text('<html>404 Not Found</html>\n')),
        ('WAV cut short (header promises more)', 'datasets', 'truncated', lambda p: p.write_bytes(p.read_bytes()[:p.stat().st_size//2])),
        ('2-channel', 'done', None, lambda p: sf.write(p, np.stack([x, 0.5*x], 1), sr, subtype='PCM_16')),
        ('8-bit', 'done', None, lambda p: sf.write(p, x, sr, subtype='PCM_U8')),
        ('24-bit', 'done', None, lambda p: sf.write(p, x, sr, subtype='PCM_24')),
        ('float', 'done', None, lambda p: sf.write(p, x, sr, subtype='FLOAT')),
        ('44.1 kHz', 'done', None, lambda p: sf.write(p, resample_poly(x, 441, 20), 44100, subtype='PCM_16')),
        ('1 kHz', 'done', None, lambda p: sf.write(p, resample_poly(x, 1, 2), 1000, subtype='PCM_16')),
        ('10-minute recording', 'done', None, lambda p: sf.write(p, np.tile(x, 600*sr//n + 1)[:600*sr], sr, subtype='PCM_16')),
        ('pure silence', 'failed', 'silent or constant', lambda p: sf.write(p, np.zeros(n), sr, subtype='PCM_16')),
        ('a constant', 'failed', 'silent or constant', lambda p: sf.write(p, np.full(n, 0.3), sr, subtype='FLOAT')),
        ('clipping', 'any', 'clipped', lambda p: sf.write(p, np.clip(8*x/np.abs(x).max(), -1, 1), sr, subtype='PCM_16')),
        ('NaN/inf samples in a float WAV', 'failed', 'NaN or infinite',
         lambda p: sf.write(p, np.where(np.arange(n) % 997 == 0, np.nan, np.where(np.arange(n) % 1499 == 0, np.inf, x)), sr, subtype='FLOAT')),
        ('listed in REFERENCE.csv, file missing', 'datasets', 'audio file missing', lambda p: p.unlink()),
    ]

@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('corpus')
    make_physionet2016(root/'raw'/'physionet2016', n_records={'training-a': (10, 10, (5, 6))}, seed=5)
    d = root/'raw'/'physionet2016'/'training-a'
    names = sorted(p.stem for p in d.glob('*.wav'))
    x, sr = sf.read(d/f'{names[0]}.wav')
    cases = {}
    for name, (what, expect, reason, write) in zip(names[1:], _cases(x, sr)):
        (d/f'{name}.hea').unlink(); write(d/f'{name}.wav')
        cases[name] = dict(what=what, expect=expect, reason=reason, file=str(d/f'{name}.wav'))
    (d/'zz_unlisted.wav').write_bytes((d/f'{names[0]}.wav').read_bytes())      # a file REFERENCE.csv does not list
    cases['zz_unlisted'] = dict(what='WAV not listed in REFERENCE.csv', expect='datasets', reason='not listed', file=str(d/'zz_unlisted.wav'))
    return dict(root=root, raw=root/'raw', cases=cases, names=names)

def test_datasets_reports_every_bad_file(corpus):
    r = pahcl('datasets', '--raw-dir', corpus['raw'], '--json')
    no_traceback(r); assert r.returncode == 0, r.stderr
    probs = {Path(p['file']).stem: p['reason'] for p in json.loads(r.stdout)['physionet2016']['problems']}
    for name, c in corpus['cases'].items():
        if c['expect'] != 'datasets': continue
        TRIED['datasets'] += 1
        assert name in probs and c['reason'] in probs[name], (c['what'], probs.get(name))
        HANDLED['datasets'] += 1
    assert set(probs) == {n for n, c in corpus['cases'].items() if c['expect'] == 'datasets'}   # nothing valid is reported
    s = pahcl('datasets', '--raw-dir', corpus['raw'], '--strict')
    no_traceback(s); assert s.returncode != 0 and len(s.stderr.strip().splitlines()) == 1, s.stderr

@pytest.fixture(scope='module')
def processed(corpus):
    out = corpus['root']/'processed'
    r = pahcl('preprocess', '--raw-dir', corpus['raw'], '--output-dir', out, '--num-workers', 2, '--quiet')
    no_traceback(r); assert r.returncode == 0, r.stderr
    return out

def test_preprocess_processes_the_rest_and_reports_each_problem(corpus, processed):
    stats = json.loads((processed/'processing_stats.json').read_text())['datasets']['physionet2016']
    failures = {Path(f['file']).stem: f['reason'] for f in stats['failures']}
    for name, c in corpus['cases'].items():
        TRIED['preprocess'] += 1
        done = (processed/'physionet2016'/f'subject_{name}'/f'rec_{name}'/'segments.csv').is_file()
        if c['expect'] == 'done': assert done and name not in failures, (c['what'], failures.get(name))
        elif c['expect'] == 'any': assert done or c['reason'] in failures[name], (c['what'], failures.get(name))
        elif c['expect'] == 'failed': assert not done and c['reason'] in failures[name], (c['what'], failures.get(name))
        elif name != 'zz_unlisted': assert not done and c['reason'] in failures[name], (c['what'], failures.get(name))
        HANDLED['preprocess'] += 1
    good = [n for n in corpus['names'] if n not in corpus['cases']]
    for n in good: assert (processed/'physionet2016'/f'subject_{n}'/f'rec_{n}'/'segments.csv').is_file(), n   # everything else
    ten = corpus['names'][list(c['what'] for c in corpus['cases'].values()).index('10-minute recording') + 1]
    seg = pd.read_csv(processed/'physionet2016'/f'subject_{ten}'/f'rec_{ten}'/'segments.csv')
    assert seg.end_s.max() > 500                                            # the long one was cut all the way through

def test_preprocess_strict_fails_fast(corpus, tmp_path):
    r = pahcl('preprocess', '--raw-dir', corpus['raw'], '--output-dir', tmp_path/'p', '--num-workers', 1, '--quiet', '--strict')
    no_traceback(r)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    first = min(n for n, c in corpus['cases'].items() if c['expect'] == 'datasets')
    assert f'{first}.wav' in r.stderr
    assert not list((tmp_path/'p').rglob('cycle_*.npy'))                    # stopped before processing anything

def _damage(processed, dst, names):
    "A copy of `processed` with four recording folders damaged as a crash or a hand edit could; {case: (name, file)}."
    shutil.copytree(processed, dst)
    rec = lambda n: dst/'physionet2016'/f'subject_{n}'/f'rec_{n}'
    a, b, c, d = names
    (rec(a)/'segments.csv').write_text('')
    (rec(b)/'segments.csv').write_bytes(b'garbage\x00\xff,,\n"unclosed')
    txt = (rec(c)/'segments.csv').read_text(); (rec(c)/'segments.csv').write_text(txt.replace('cycle,', 'cyc,', 1))
    (rec(d)/'cycle_001.npy').unlink()
    orphan = dst/'physionet2016'/'subject_zz9999'/'rec_zz9999'; shutil.copytree(rec(d), orphan)
    return {'empty segments.csv': rec(a)/'segments.csv', 'binary junk in segments.csv': rec(b)/'segments.csv',
            "segments.csv without a 'cycle' column": rec(c)/'segments.csv', 'a cycle file missing': rec(d)/'cycle_001.npy',
            'processed recording without labels': orphan}

def test_prepare_skips_damaged_recordings_and_names_them(corpus, processed, tmp_path):
    done = [n for n, c in corpus['cases'].items() if c['expect'] == 'done' and c['what'] != '10-minute recording']
    rest = [n for n in corpus['names'] if n not in corpus['cases']] + done[4:]
    damaged = _damage(processed, tmp_path/'processed', done[:4])
    r = pahcl('prepare', '--dataset', 'physionet2016', '--raw-dir', corpus['raw'], '--processed-dir', tmp_path/'processed',
              '--output-dir', tmp_path/'down')
    no_traceback(r); assert r.returncode == 0, r.stderr
    for what, f in damaged.items():
        TRIED['prepare'] += 1
        assert str(f) in r.stderr, (what, r.stderr[-2000:])
        HANDLED['prepare'] += 1
    rows = pd.concat([read_task_csv(tmp_path/'down'/'physionet2016'/f'{sp}.csv')[0] for sp in ('train', 'val', 'test')])
    assert not set(rows.recording) & set(done[:3])                          # the unreadable ones left out ...
    assert set(rest) <= set(rows.recording)                                 # ... everything else in
    assert done[3] in set(rows.recording) and 'cycle_001' not in set(rows[rows.recording == done[3]].cycle)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(PrepareError) as e:
            prepare('physionet2016', _clean_raw(corpus, tmp_path), tmp_path/'processed', tmp_path/'down2', strict=True)
    assert str(e.value).split(':')[0] in {str(f) for f in damaged.values()}, str(e.value)
    assert not (tmp_path/'down2'/'physionet2016').exists()

def _clean_raw(corpus, tmp_path):
    "The corpus' raw folder without its unreadable files (so that `strict` reaches the processed folder)."
    raw = tmp_path/'raw_ok'
    if raw.exists(): return raw
    shutil.copytree(corpus['raw'], raw)
    d = raw/'physionet2016'/'training-a'
    bad = {n for n, c in corpus['cases'].items() if c['expect'] == 'datasets'}
    for n in bad: (d/f'{n}.wav').unlink(missing_ok=True)
    ref = [l for l in (d/'REFERENCE.csv').read_text().splitlines() if l.split(',')[0] not in bad]
    (d/'REFERENCE.csv').write_text('\n'.join(ref) + '\n')
    return raw

def test_split_level_damage(corpus, processed, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        prepare('physionet2016', corpus['raw'], processed, tmp_path/'down')
    task = tmp_path/'down'/'physionet2016'
    tr, _ = read_split(task, 'train')
    csv = (task/'train.csv').read_text().split('\n'); head = csv[1].split(',')
    def cell(line, col, value): return ','.join(value if k == head.index(col) else v for k, v in enumerate(line.split(',')))
    # 1. a label outside the label map, 2. a label_id outside it, 3. a row pointing at a missing file
    csv[2] = cell(csv[2], 'label', 'murmur'); csv[3] = cell(csv[3], 'label_id', '5'); csv[4] = cell(csv[4], 'path', 'train/subject_x/rec_x/cycle_000.npy')
    (task/'train.csv').write_text('\n'.join(csv))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); got, _ = read_split(task, 'train')
    msgs = ' | '.join(str(m.message) for m in w)
    assert len(got) == len(tr) - 3 and str(task/'train.csv') in msgs, msgs
    assert '2 row(s) have a label outside' in msgs and "1 row(s) point at cycle files that do not exist (first: row 3, " in msgs and 'subject_x/rec_x/cycle_000.npy' in msgs
    TRIED['split'] += 3; HANDLED['split'] += 3
    with pytest.raises(DataError, match='train.csv: 2 row'): read_split(task, 'train', strict=True)
    # 4. a task CSV with a missing column
    val = pd.read_csv(task/'val.csv', skiprows=1).drop(columns='label_id')
    (task/'val.csv').write_text((task/'val.csv').read_text().split('\n')[0] + '\n' + val.to_csv(index=False))
    TRIED['split'] += 1
    with pytest.raises(DataError, match=r'val.csv: column\(s\) label_id missing'): read_split(task, 'val')
    HANDLED['split'] += 1
    # 5. NaN and inf in cycle .npy files (and one that is not numpy at all)
    test, _ = read_split(task, 'test')
    for p, bad in zip(test.path[:3], (np.nan, np.inf, None)):
        a = np.load(p); os.unlink(p)                                        # hard links: write a new file, not into processed/
        if bad is None: Path(p).write_text('not numpy')
        else: a[len(a)//3] = bad; np.save(p, a)
    TRIED['cycles'] += 3
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); kept = check_cycles(test)
    assert len(kept) == len(test) - 3 and sorted(str(m.message).split(':')[0] for m in w) == sorted(test.path[:3]), [str(m.message) for m in w]
    with pytest.raises(DataError, match=re.escape(test.path[0]) + ': the cycle holds NaN'): CycleDataset(test)[0]
    with pytest.raises(DataError, match='cannot read this cycle'): CycleDataset(test)[2]
    with pytest.raises(DataError, match=re.escape(test.path[0])): check_cycles(test, strict=True)
    HANDLED['cycles'] += 3

# ------------------------------------------------------------------ interruption and determinism
_TEMP = re.compile(r'\.(tmp|old)\d+$')

def snapshot(root) -> dict:
    "relative path -> sha256 of every file under `root` (run-describing fields of the JSON reports left out)."
    out = {}
    for p in sorted(Path(root).rglob('*')):
        if not p.is_file(): continue
        rel = p.relative_to(root).as_posix()
        data = p.read_bytes()
        if p.name == 'processing_stats.json' or (p.parent.name == '.status' and p.suffix == '.json'):
            try: obj = json.loads(data)
            except ValueError: obj = {'unparseable': data.hex()}
            obj.pop('seconds', None)
            for d in (obj.get('datasets') or {}).values(): d.pop('skipped_already_done', None)
            data = json.dumps(obj, sort_keys=True).encode()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out

def start(*args):
    return subprocess.Popen([sys.executable, '-m', 'pahcl', *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)

def finish(*args):
    t0 = time.perf_counter(); r = pahcl(*args)
    no_traceback(r); assert r.returncode == 0, r.stderr
    return time.perf_counter() - t0

def leftover_processes(marker:str) -> list:
    out = []
    for d in Path('/proc').glob('[0-9]*'):
        try: cmd = (d/'cmdline').read_bytes().decode(errors='replace')
        except OSError: continue
        if marker in cmd: out.append(int(d.name))
    return out

def killed_at(args, delay, group=True):
    p = start(*args); time.sleep(delay)
    if p.poll() is None:
        if group: os.killpg(p.pid, signal.SIGKILL)
        else: os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return p.returncode

def assert_partial_is_prefix(tree, ref):
    "Every file a killed run left that is not a marked temporary is complete: the same bytes as in the reference."
    snap = snapshot(tree) if Path(tree).exists() else {}
    for rel, h in snap.items():
        if any(_TEMP.search(part) for part in rel.split('/')): continue
        assert rel in ref and ref[rel] == h, f'{rel} after a kill differs from the complete run'
    return snap

@pytest.fixture(scope='module')
def small_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp('kill')
    make_physionet2016(root/'raw'/'physionet2016', n_records={'training-a': (4, 4, (5, 6))}, seed=11)
    return root

def _run(fn, *a, **kw):
    "An uninterrupted run in this process (no interpreter start-up to pay); its duration."
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); fn(*a, **kw)
    return time.perf_counter() - t0

def test_kill_preprocess_and_prepare_then_rerun_is_identical(small_raw):
    from pahcl.preprocess import preprocess
    root = small_raw; raw = root/'raw'
    pre = lambda out: ('preprocess', '--raw-dir', raw, '--output-dir', out, '--num-workers', 2, '--quiet')
    prep = lambda proc, out: ('prepare', '--dataset', 'physionet2016', '--raw-dir', raw, '--processed-dir', proc, '--output-dir', out)
    run_pre = lambda out: _run(preprocess, raw, out, num_workers=2, progress=False)
    run_prep = lambda proc, out: _run(prepare, 'physionet2016', raw, proc, out)
    proc, down = root/'processed', root/'downstream'
    t_pre = finish(*pre(proc)); t_prep = finish(*prep(proc, down))     # the command line, timed with its start-up
    ref_proc, ref_down = snapshot(proc), snapshot(down)
    assert any(k.endswith('.npy') for k in ref_proc) and any(k.endswith('train.csv') for k in ref_down)

    # determinism: a second uninterrupted run with the same seed gives the same bytes (cycles, CSVs, task configs)
    shutil.rmtree(proc); shutil.rmtree(down)
    run_pre(proc); run_prep(proc, down)
    assert snapshot(proc) == ref_proc and snapshot(down) == ref_down

    rng = np.random.default_rng(2024)
    kills = Counter()
    # preprocess: three kills at seeded random moments, each resuming what the one before left; one kills only the parent
    shutil.rmtree(proc)
    for k, frac in enumerate(sorted(rng.uniform(0.3, 0.95, 3))):
        rc = killed_at(pre(proc), frac*t_pre, group=k != 1)
        kills['preprocess', rc == -signal.SIGKILL] += 1
        for _ in range(50):                                                   # a killed worker may take a moment to go
            if not leftover_processes(str(proc)): break
            time.sleep(0.1)
        assert not leftover_processes(str(proc)), 'a worker outlived its killed parent'
        assert_partial_is_prefix(proc, ref_proc)
    run_pre(proc)
    assert snapshot(proc) == ref_proc
    assert not [p for p in proc.rglob('*') if _TEMP.search(p.name)]         # nothing half-written left behind

    shutil.rmtree(down)
    for frac in sorted(rng.uniform(0.3, 0.95, 3)):
        rc = killed_at(prep(proc, down), frac*t_prep)
        kills['prepare', rc == -signal.SIGKILL] += 1
        snap = assert_partial_is_prefix(down, ref_down)
        tasks = {rel.split('/')[0] for rel in snap if not _TEMP.search(rel.split('/')[0])}
        for t in tasks: assert {f'{t}/{f}' for f in ('train.csv', 'val.csv', 'test.csv', 'task_config.json')} <= set(snap)
    run_prep(proc, down)
    assert snapshot(down) == ref_down
    print(f'\nkills (command, killed before it finished): {dict(kills)}; command lines took preprocess {t_pre:.1f} s, prepare {t_prep:.1f} s')
    assert sum(v for (cmd, hit), v in kills.items() if hit) >= 3              # most kill points did land inside the runs

def test_zz_bad_input_count():
    "The count of bad-input cases tried and handled (filled by the tests above; run the module as a whole)."
    if not TRIED: pytest.skip('run the whole module to count')
    print(f'\nbad-input cases: tried {sum(TRIED.values())} {dict(TRIED)}, handled {sum(HANDLED.values())} {dict(HANDLED)}')
    assert HANDLED == TRIED
    assert sum(TRIED.values()) == 6 + 17 + 5 + 4 + 3          # datasets, preprocess, prepare, split CSV, cycle files
