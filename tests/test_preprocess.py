"""`pahcl preprocess` end to end: the guide's layout, bad recordings, re-runs and interrupted runs."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, soundfile as sf
import pytest
from pahcl.demo_data import make_demo_datasets

@pytest.fixture(scope='module')
def demo_raw(tmp_path_factory):
    d = tmp_path_factory.mktemp('raw')
    make_demo_datasets(d, seed=0, scale='small')
    return d

@pytest.fixture(scope='module')
def processed(demo_raw, tmp_path_factory):
    "One uninterrupted run over the demo datasets, with the CLI, two workers."
    out = tmp_path_factory.mktemp('processed')
    r = subprocess.run([sys.executable, '-m', 'pahcl', 'preprocess', '--raw_dir', str(demo_raw), '--output_dir', str(out),
                        '--num_workers', '2', '--quiet'], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out, r.stdout

def tree(root):
    "{relative path: bytes} of every cycle and segments file under root."
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and (p.suffix == '.npy' or p.name == 'segments.csv')}

def test_layout_and_stats(processed):
    out, stdout = processed
    stats = json.loads((out/'processing_stats.json').read_text())
    assert sorted(stats['datasets']) == ['circor', 'pascal', 'physionet2016']
    for name, d in stats['datasets'].items():
        assert d['recordings']['done'] >= 0.8*d['recordings']['total'], (name, d['recordings'], d['failure_reasons'])
        assert d['cycles']['kept'] > 0 and d['hours'] > 0 and 40 < d['heart_rate']['median'] < 200
        assert len(list((out/name).glob('subject_*/rec_*/cycle_000.npy'))) == d['recordings']['done']
    assert (out/'circor').glob('subject_*/rec_AV')
    assert any((out/'circor').glob('subject_*/rec_AV')) and any((out/'circor').glob('subject_*/rec_MV'))
    cyc = sorted(out.rglob('cycle_*.npy'))
    assert len(cyc) == stats['total']['cycles']
    a = np.load(cyc[0]); assert a.dtype == np.float32 and a.shape == (4000,) and np.isfinite(a).all()
    seg = pd.read_csv(cyc[0].parent/'segments.csv')
    for col in ('cycle', 'start_s', 'end_s', 'length', 's1_start', 'systole_start', 's2_start', 'diastole_start', 'heart_rate', 'quality'):
        assert col in seg.columns
    assert sorted(seg.cycle + '.npy') == sorted(p.name for p in cyc[0].parent.glob('cycle_*.npy'))
    assert (seg.start_s < seg.end_s).all() and (seg.s2_start > seg.systole_start).all()
    assert f"{stats['total']['cycles']} cycles" in stdout

def test_rerun_skips_and_changes_nothing(processed, demo_raw, pahcl):
    out, _ = processed
    before = {p: p.stat().st_mtime_ns for p in out.rglob('cycle_*.npy')}
    r = pahcl('preprocess', '--raw-dir', demo_raw, '--output-dir', out, '--num-workers', '1', '--quiet')
    assert r.returncode == 0, r.stderr
    stats = json.loads((out/'processing_stats.json').read_text())
    assert all(d['skipped_already_done'] == d['recordings']['done'] for d in stats['datasets'].values())
    assert {p: p.stat().st_mtime_ns for p in out.rglob('cycle_*.npy')} == before

def test_killed_run_resumes_to_the_same_files(processed, demo_raw, tmp_path):
    out, _ = processed
    part = tmp_path/'processed'
    cmd = [sys.executable, '-m', 'pahcl', 'preprocess', '--raw_dir', str(demo_raw), '--output_dir', str(part),
           '--num_workers', '2', '--quiet']
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(part.glob('*/.status/*.json'))) < 30: time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert not (part/'processing_stats.json').exists(), 'the run finished before it could be interrupted'
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    stats = json.loads((part/'processing_stats.json').read_text())
    assert sum(d['skipped_already_done'] for d in stats['datasets'].values()) >= 30
    assert tree(part) == tree(out)                                  # byte-identical to the uninterrupted run
    assert not list(part.rglob('.*.tmp*'))                           # no half-written folder left behind

def test_bad_recordings_are_reported_and_the_rest_processed(demo_raw, tmp_path, pahcl):
    raw = tmp_path/'raw'; shutil.copytree(demo_raw/'physionet2016', raw/'physionet2016')
    wavs = sorted((raw/'physionet2016'/'training-a').glob('*.wav'))
    (x0, sr), (x1, _), (x2, _), (x3, _) = (sf.read(w) for w in wavs[:4])   # same lengths, so the .hea still agree
    sf.write(wavs[0], np.zeros_like(x0), sr, subtype='PCM_16')                       # silence
    sf.write(wavs[1], np.full_like(x1, 0.25), sr, subtype='PCM_16')                  # a constant
    x2[len(x2)//2] = np.nan; sf.write(wavs[2], x2, sr, subtype='FLOAT')              # NaN in a float WAV
    sf.write(wavs[3], np.clip(x3*50, -1, 1), sr, subtype='PCM_16')                   # hard clipping
    wavs[4].write_bytes(b'')                                                          # zero bytes
    r = pahcl('preprocess', '--raw_dir', raw, '--output_dir', tmp_path/'out', '--num_workers', '2', '--quiet')
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path/'out'/'processing_stats.json').read_text())['datasets']['physionet2016']
    failed = {Path(f['file']).name: f['reason'] for f in d['failures']}
    assert 'silent or constant' in failed[wavs[0].name] and 'silent or constant' in failed[wavs[1].name]
    assert 'NaN' in failed[wavs[2].name]
    assert wavs[4].name in failed
    assert wavs[3].name in failed or d['cycles']['dropped'].get('clipped', 0) > 0
    assert d['recordings']['done'] >= len(wavs) - 5 - 3
    r = pahcl('preprocess', '--raw_dir', raw, '--output_dir', tmp_path/'out2', '--strict', '--quiet', '--num_workers', '1')
    assert r.returncode != 0 and 'Traceback' not in r.stderr

def test_real_pascal(shared_data, tmp_path, pahcl):
    r = pahcl('preprocess', '--raw_dir', shared_data, '--output_dir', tmp_path, '--dataset', 'pascal', '--num_workers', '2', '--quiet')
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path/'processing_stats.json').read_text())['datasets']['pascal']
    assert d['recordings']['total'] == 656 and d['recordings']['done'] >= 0.8*656, d['failure_reasons']
    assert d['cycles']['kept'] > 4000

def test_prepare_after_preprocess_through_the_cli(processed, demo_raw, tmp_path, pahcl):
    "The guide's §2.3 on the demo datasets: four task folders, class weights first, no leak, same seed same CSVs."
    from pahcl.tasks import check_leakage
    out, _ = processed
    runs = []
    for name in ('a', 'b'):
        r = pahcl('prepare', '--dataset', 'all', '--raw-dir', demo_raw, '--processed-dir', out, '--output-dir', tmp_path/name, '--seed', '42')
        assert r.returncode == 0, r.stderr
        runs.append({p.relative_to(tmp_path/name).as_posix(): p.read_bytes() for p in (tmp_path/name).glob('*/*.csv')})
    assert runs[0] == runs[1] and len(runs[0]) == 12
    for task in ('circor_murmur', 'circor_outcome', 'physionet2016', 'pascal'):
        d = tmp_path/'a'/task
        assert (d/'train.csv').read_text().startswith('# class_weights: [')
        assert json.loads((d/'task_config.json').read_text())['task'] == task
        check_leakage(d)
        assert any((d/'test').glob('subject_*/rec_*/cycle_*.npy'))
