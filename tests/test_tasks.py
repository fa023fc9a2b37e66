"""`pahcl.tasks.prepare` end to end: the guide's layout, class weights, leakage check, determinism, bad input."""
import json, os, shutil, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from pahcl.config import task_info
from pahcl.demo_data import make_circor, make_physionet2016, make_pascal
from pahcl.preprocess import preprocess
from pahcl.tasks import (SPLITS, LeakageError, PrepareError, PrepareWarning, check_leakage, prepare, read_task_csv,
                         write_task_csv)

TASKS = ['circor_murmur', 'circor_outcome', 'physionet2016', 'pascal']

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    "Tiny synthetic raw datasets, preprocessed: (raw, processed)."
    root = tmp_path_factory.mktemp('demo')
    make_circor(root/'raw'/'circor', n_patients=(4, 4, 3), seconds=(8, 9), seed=1)
    make_physionet2016(root/'raw'/'physionet2016', n_records={'training-a': (6, 6, (8, 9))}, seed=1)
    make_pascal(root/'raw'/'pascal', n_subjects=(4, 4, 4, 2), files_per_subject=(1, 2), seconds=(4, 6), seed=1)
    preprocess(root/'raw', root/'processed', num_workers=2, progress=False)
    return root/'raw', root/'processed'

def run(demo, out, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        summary = prepare(kw.pop('dataset', 'all'), demo[0], demo[1], out, **kw)
    return summary, [str(w.message) for w in caught if issubclass(w.category, PrepareWarning)]

@pytest.fixture(scope='module')
def prepared(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp('downstream')
    return out, *run(demo, out, seed=42)

def test_layout(prepared, demo):
    out, summary, _ = prepared
    assert sorted(summary) == sorted(TASKS)
    assert sorted(p.name for p in out.iterdir()) == sorted(TASKS)          # no temporary folders left
    for task in TASKS:
        d, info = out/task, task_info(task)
        assert sorted(p.name for p in d.iterdir()) == sorted(['task_config.json', *SPLITS, *(f'{s}.csv' for s in SPLITS)])
        cfg = json.loads((d/'task_config.json').read_text())
        for key in ('task', 'dataset', 'labels', 'label_map', 'num_classes', 'counts', 'class_weights', 'seed', 'ratios',
                    'source', 'primary_metric', 'label_rule'):
            assert key in cfg, (task, key)
        assert cfg['labels'] == info['labels'] and cfg['label_map'] == info['label_map'] and cfg['seed'] == 42
        assert cfg['files'] == 'hardlink'
        for sp in SPLITS:
            df, w = read_task_csv(d/f'{sp}.csv')
            assert w == cfg['class_weights']
            assert df.columns[:7].tolist() == ['path', 'subject', 'recording', 'location', 'cycle', 'label', 'label_id']
            assert {'s1_start', 'systole_start', 's2_start', 'diastole_start'} <= set(df.columns)
            assert (df.label.map(info['label_map']) == df.label_id).all()
            assert len(df) == cfg['counts'][sp]['cycles'] > 0
            assert all(p.startswith(f'{sp}/subject_') and p.count('/') == 3 and '/rec_' in p for p in df.path)
            for p in df.path[:20]:
                f = d/p
                assert f.is_file() and f.stat().st_nlink >= 2                # a hard link to the processed cycle
                src = demo[1]/info['dataset']/Path(p).relative_to(sp)
                assert os.path.samefile(f, src)
        check_leakage(d)

def test_header_line_and_weights(prepared):
    out = prepared[0]
    for task in TASKS:
        first = (out/task/'train.csv').read_text().split('\n', 1)[0]
        assert first.startswith('# class_weights: [')
        tr, w = read_task_csv(out/task/'train.csv')
        n = np.bincount(tr.label_id, minlength=len(w))
        expect = (1/n)/(1/n).sum()*len(w)                                     # inverse frequency of training cycles
        np.testing.assert_allclose(w, expect, atol=1e-5)
        assert abs(sum(w) - len(w)) < 1e-4

def test_subject_splits_and_classes(prepared):
    out = prepared[0]
    for task in TASKS:
        dfs = {sp: read_task_csv(out/task/f'{sp}.csv')[0] for sp in SPLITS}
        subj = [set(df.subject) for df in dfs.values()]
        assert not (subj[0] & subj[1] or subj[0] & subj[2] or subj[1] & subj[2])
        allsub = pd.concat(dfs.values()).drop_duplicates('subject')
        for lab, k in allsub.label.value_counts().items():
            if k >= 3: assert all((df.label == lab).any() for df in dfs.values()), (task, lab)
    pas = pd.concat(read_task_csv(out/'pascal'/f'{sp}.csv')[0] for sp in SPLITS)
    assert set(pas.label) == {'normal', 'murmur', 'extrasystole'}           # artifact/unlabelled left out, spelling fixed

def test_deterministic_and_rerun(prepared, demo, tmp_path):
    out = prepared[0]
    again, _ = run(demo, tmp_path/'b', seed=42)
    for task in TASKS:
        for f in ('train.csv', 'val.csv', 'test.csv'):
            assert (out/task/f).read_bytes() == (tmp_path/'b'/task/f).read_bytes(), (task, f)
    other, _ = run(demo, tmp_path/'c', seed=7)
    assert any((out/t/'test.csv').read_bytes() != (tmp_path/'c'/t/'test.csv').read_bytes() for t in TASKS)
    # re-running into the same folder replaces the task whole
    (tmp_path/'c'/'pascal'/'train'/'stale').mkdir()
    run(demo, tmp_path/'c', dataset='pascal', seed=42)
    assert (tmp_path/'c'/'pascal'/'test.csv').read_bytes() == (out/'pascal'/'test.csv').read_bytes()
    assert not (tmp_path/'c'/'pascal'/'train'/'stale').exists()
    assert sorted(p.name for p in (tmp_path/'c').iterdir()) == sorted(TASKS)

def test_copy_mode(demo, tmp_path):
    summary, _ = run(demo, tmp_path, dataset='physionet2016', copy=True)
    assert summary['physionet2016']['files'] == 'copy'
    df, _ = read_task_csv(tmp_path/'physionet2016'/'train.csv')
    assert (tmp_path/'physionet2016'/df.path[0]).stat().st_nlink == 1

def test_leak_detected(prepared, tmp_path):
    src = prepared[0]/'circor_outcome'
    d = tmp_path/'leak'; shutil.copytree(src, d)
    tr, w = read_task_csv(d/'train.csv'); va, _ = read_task_csv(d/'val.csv')
    moved = va.subject.iloc[0]                                                 # one val subject also in train
    write_task_csv(d/'train.csv', pd.concat([tr, va[va.subject == moved]]), w)
    with pytest.raises(LeakageError, match=f'subject.*{moved}'): check_leakage(d)
    # only the folder on disk leaks (CSV clean): still caught
    shutil.rmtree(d); shutil.copytree(src, d)
    shutil.copytree(d/'val'/f'subject_{moved}', d/'test'/f'subject_{moved}')
    with pytest.raises(LeakageError, match=moved): check_leakage(d)

def test_bad_input(demo, tmp_path):
    with pytest.raises(PrepareError, match='pahcl preprocess'): prepare('all', demo[0], tmp_path/'missing', tmp_path/'out')
    (tmp_path/'empty').mkdir()
    with pytest.raises(PrepareError, match='pahcl preprocess'): prepare('circor', demo[0], tmp_path/'empty', tmp_path/'out')
    with pytest.raises(PrepareError, match='pahcl download'): prepare('circor', tmp_path/'noraw', demo[1], tmp_path/'out')
    assert not (tmp_path/'out').exists() or not any((tmp_path/'out').iterdir())

def test_missing_labels_and_small_class_warn(demo, tmp_path):
    raw = tmp_path/'raw'; shutil.copytree(demo[0]/'circor', raw/'circor')
    t = pd.read_csv(raw/'circor'/'training_data.csv', dtype=str, keep_default_na=False)
    unknown = t[t.Murmur == 'Unknown']['Patient ID'].tolist()
    t.loc[t['Patient ID'] == unknown[0], 'Outcome'] = ''                      # one patient without Outcome
    t.loc[t['Patient ID'].isin(unknown[1:]), 'Murmur'] = ''                   # two without Murmur: Unknown class shrinks to 1
    t.to_csv(raw/'circor'/'training_data.csv', index=False)
    for pid in unknown: (raw/'circor'/'training_data'/f'{pid}.txt').unlink()   # so the .txt cannot fill the gaps
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        summary = prepare('circor', raw, demo[1], tmp_path/'out')
    msgs = ' | '.join(str(w.message) for w in caught if issubclass(w.category, PrepareWarning))
    assert 'problem(s) reading labels' in msgs and "class 'Unknown' has only" in msgs, msgs
    assert 'have no labels' in msgs, msgs                                     # processed recordings without labels: skipped
    assert sorted(summary) == ['circor_murmur', 'circor_outcome']
    for task in summary: check_leakage(tmp_path/'out'/task)
    df = pd.concat(read_task_csv(tmp_path/'out'/'circor_murmur'/f'{sp}.csv')[0] for sp in SPLITS)
    assert not set(df.subject) & set(unknown[1:])

def test_real_physionet2016(shared_data, tmp_path):
    "PhysioNet 2016 training-d only (55 records; subjects are records): preprocess, prepare, check."
    raw = tmp_path/'raw'/'physionet2016'; raw.mkdir(parents=True)
    os.symlink(shared_data/'physionet2016'/'training-d', raw/'training-d', target_is_directory=True)
    t0 = time.perf_counter()
    preprocess(tmp_path/'raw', tmp_path/'processed', dataset='physionet2016', num_workers=os.cpu_count(), progress=False)
    summary, _ = run((tmp_path/'raw', tmp_path/'processed'), tmp_path/'down', dataset='physionet2016', seed=42)
    c = summary['physionet2016']['counts']
    assert all(c[sp]['classes']['normal'] > 0 and c[sp]['classes']['abnormal'] > 0 for sp in SPLITS)
    assert 0.55 < c['train']['subjects']/sum(c[sp]['subjects'] for sp in SPLITS) < 0.8
    check_leakage(tmp_path/'down'/'physionet2016')
    assert time.perf_counter() - t0 < 300
