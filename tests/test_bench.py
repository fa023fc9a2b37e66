"""bench_encoder end to end on a tiny encoder (fresh-process memory measurements included), and the FLOP count of
the guide's encoder against the arithmetic done by hand."""
import math
import pytest
import pandas as pd
import torch
from pahcl.speed import bench_encoder, encoder_flops, matmul_flops, mambapy_layer
from pahcl.models import MODEL_PRESETS, build_encoder

KEYS = ('cycles_per_s', 'mambapy_cycles_per_s', 'speedup_vs_mambapy', 'peak_memory_mb', 'mambapy_peak_memory_mb',
        'memory_ratio_vs_mambapy', 'flops_per_cycle', 'achieved_flops', 'matmul_flops', 'matmul_fraction', 'scan',
        'device', 'threads', 'config')

def test_bench_encoder_tiny():
    pytest.importorskip('mambapy')
    r = bench_encoder(dict(MODEL_PRESETS['tiny']), batch=4, n_samples=1600, steps=1, cpu_preset=False, verbose=False)
    for k in KEYS: assert k in r, k
    assert r['cycles_per_s'] > 0 and r['mambapy_cycles_per_s'] > 0
    assert math.isclose(r['speedup_vs_mambapy'], r['cycles_per_s'] / r['mambapy_cycles_per_s'], rel_tol=0.02, abs_tol=0.01)
    assert 0 <= r['peak_memory_mb'] < 4000 and 0 <= r['mambapy_peak_memory_mb'] < 4000
    if r['mambapy_peak_memory_mb']:
        assert math.isclose(r['memory_ratio_vs_mambapy'], r['peak_memory_mb'] / r['mambapy_peak_memory_mb'], rel_tol=0.01)
    assert r['flops_per_cycle'] > 0 and r['matmul_flops'] > 1e8
    assert math.isclose(r['achieved_flops'], r['flops_per_cycle'] * r['cycles_per_s'], rel_tol=1e-3)
    assert math.isclose(r['matmul_fraction'], r['achieved_flops'] / r['matmul_flops'], rel_tol=1e-2, abs_tol=1e-4)
    assert {'ref', 'torch', 'mambapy'} <= set(r['scan'])
    for v in r['scan'].values(): assert v['forward_ms'] > 0 and v['forward_ms'] + v['backward_ms'] > 0 and v['peak_mb'] >= 0
    assert r['threads'] == torch.get_num_threads() and r['config']['batch'] == 4 and r['config']['tokens'] == 100
    assert r['mambapy_bidirectional'] == r['config']['mamba_bidirectional']

def test_without_mambapy_and_memory():
    r = bench_encoder(dict(MODEL_PRESETS['tiny']), batch=2, n_samples=800, steps=1, include_mambapy=False, memory=False,
                      scan=False, cpu_preset=False, verbose=False)
    assert r['mambapy_cycles_per_s'] is None and r['speedup_vs_mambapy'] is None and r['peak_memory_mb'] is None
    assert r['scan'] == {} and r['cycles_per_s'] > 0

def test_guide_flops_by_hand():
    "The guide's encoder: the Mamba layers' projections alone are 4 × 250 × (2·256·1024 + 2·512·256 + ...) FLOPs."
    f = encoder_flops(None, 4000)
    proj = 4 * 250 * (2 * 256 * 1024 + 2 * 512 * 256)
    assert proj < f['counted'] < 1.6 * proj, f
    assert f['scan'] == 4 * 250 * 2 * (7 * 512 * 16 + 8 * 512)
    assert f['training'] == 3 * f['forward'] == 3 * (f['counted'] + f['scan'])

def test_mambapy_layer_shape():
    pytest.importorskip('mambapy')
    layer = mambapy_layer(16, d_state=4)
    x = torch.randn(2, 9, 16)
    assert layer(x).shape == x.shape
    enc = build_encoder(dict(MODEL_PRESETS['tiny']), layer_factory=lambda d: mambapy_layer(d, 8))
    frames, pooled = enc(torch.randn(2, 1, 800))
    assert frames.shape == (2, 50, 32) and pooled.shape == (2, 32)

def test_matmul_flops_positive():
    assert 1e7 < matmul_flops(256, repeats=2) < 1e15

def test_mambapy_bidirectional_layer():
    "The bidirectional baseline reads both ways, shares its projections, and every parameter gets a gradient."
    pytest.importorskip('mambapy')
    torch.manual_seed(0)
    layer = mambapy_layer(16, d_state=4, bidirectional=True)
    assert layer.fwd.in_proj is layer.bwd.in_proj and layer.fwd.out_proj is layer.bwd.out_proj
    x = torch.randn(2, 9, 16)
    y = layer(x)
    assert y.shape == x.shape
    x2 = x.clone(); x2[:, -1] += 1
    assert (layer(x2)[:, 0] - y[:, 0]).abs().max() > 1e-6           # the first token sees the last one
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


# --- pahcl bench quality, end to end on tiny synthetic data -------------------------------------------------

def test_bench_quality_end_to_end(pahcl, tiny_demo, tmp_path):
    "Every method (the ablations too) on two tasks, an external test set, the JSON line and the files; the budget is split by stage."
    import json
    from pahcl.studies import QUALITY_METHODS
    from pahcl.demo_data import make_physionet2016
    ext = tmp_path/'ext'
    make_physionet2016(ext/'physionet2016', n_records={'training-e': (5, 5, (6, 7))}, seed=11)
    r = pahcl('bench', 'quality', '--data-root', tiny_demo['raw'], '--test-root', ext, '--budget-minutes', '1',
              '--tasks', 'physionet2016', 'pascal', '--folds', '1', '--ablations', '--out', tmp_path/'q', '--json', timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(res['tasks']) == {'physionet2016', 'pascal'}
    for task, methods in res['tasks'].items():
        assert tuple(methods) == QUALITY_METHODS, (task, list(methods))
        for m, v in methods.items():
            for k in ('primary', 'primary_metric', 'auroc', 'f1_macro', 'minutes', 'n'): assert k in v, (task, m, k)
            assert 0 <= v['f1_macro'] <= 1 and v['n'] == res['counts'][task]['test'][SCORING_UNIT[task]]
            lo, hi = v['primary_ci']                                     # a bootstrap interval over the test units
            assert lo <= hi and 0 <= lo <= 1 and 0 <= hi <= 1, (task, m, v['primary_ci'])
            assert len(v['offsets']) == (2 if task == 'physionet2016' else 3), (task, m, v['offsets'])   # decision offsets, tuned on val
    assert res['tasks']['physionet2016']['finetune']['primary_metric'] == 'recording_auroc'
    assert {'macc', 'se', 'sp'} <= set(res['tasks']['physionet2016']['scratch'])
    assert {'total_precision', 'precision_murmur'} <= set(res['tasks']['pascal']['classical'])
    assert list(res['external']) == ['physionet2016'] and tuple(res['external']['physionet2016']) == QUALITY_METHODS
    assert res['counts']['external']['physionet2016']['recordings'] == 10
    assert all(v['n'] == 10 for v in res['external']['physionet2016'].values())
    assert res['counts']['pretrain']['excluded_subjects'] > 0            # downstream val/test subjects never pretrained on
    assert set(res['stages']) == {'preprocess', 'data', 'classical', 'pretrain', 'probes', 'finetune'} and res['minutes'] > 0
    assert set(res['pretrain']) == {'pahcl', 'cycle_only', 'sub_only'}
    assert all(v['criterion'] == 'val_loss' for v in res['pretrain'].values())    # the epoch of least validation loss is kept
    assert (tmp_path/'q'/'quality.md').read_text().count('| classical |') == 5   # 2 tasks, the external set, 2 paired tables
    for task in ('pascal', 'physionet2016'):                              # every method paired with finetune and scratch, one split
        p = res['paired'][task]['classical']['vs_finetune']
        assert p['units'] == res['counts'][task]['test'][SCORING_UNIT[task]] and p['ci'][0] <= p['ci'][1], p
    assert json.loads((tmp_path/'q'/'quality.json').read_text())['tasks'] == res['tasks']
    for m in ('scratch', 'finetune', 'fewshot10'): assert (tmp_path/'q'/'runs'/f'pascal_{m}'/'final_metrics.json').exists()
    few = json.loads((tmp_path/'q'/'runs'/'pascal_fewshot10'/'final_metrics.json').read_text())
    full = json.loads((tmp_path/'q'/'runs'/'pascal_finetune'/'final_metrics.json').read_text())
    assert few['train_subjects'] < full['train_subjects'] and few['init'] == full['init'] == 'pretrained'
    # the frozen-encoder few-shot tool reads this run's folder
    import subprocess, sys
    from conftest import ROOT
    tool = subprocess.run([sys.executable, str(ROOT/'tools'/'quality_fewshot_probe.py'), '--out', str(tmp_path/'q'), '--seeds', '0', '1'],
                          capture_output=True, text=True, timeout=600)
    assert tool.returncode == 0, tool.stderr[-3000:]
    rows = [l for l in tool.stdout.splitlines() if l.startswith(('| pascal', '| physionet2016'))]
    assert len(rows) == 2 and all(l.count('subjects)') == 2 for l in rows), tool.stdout
    # and the pretrained-against-random probe tool too
    tool = subprocess.run([sys.executable, str(ROOT/'tools'/'quality_probe_vs_random.py'), '--out', str(tmp_path/'q'), '--variants',
                           'pahcl', 'sub_only', '--random-seeds', '0', '1', '--json', str(tmp_path/'pvr.json')], capture_output=True, text=True, timeout=600)
    assert tool.returncode == 0, tool.stderr[-3000:]
    lines = tool.stdout.splitlines()
    rows = [l for l in lines if l.startswith(('| pascal (', '| physionet2016 ('))]
    assert len(rows) == 4 and all(l.count('[') == 2 for l in rows), tool.stdout          # 2 tasks x 2 encoders, 2 random seeds
    head = [i for i, l in enumerate(lines) if l.startswith('| pascal: one class against the rest | normal (')]   # PASCAL's 3 classes
    assert len(head) == 1 and not any(l.startswith('| physionet2016: one class') for l in lines), tool.stdout
    assert [l.split(' |')[0] for l in lines[head[0] + 2:head[0] + 6]] == ['| pahcl', '| sub_only', '| random seed 0', '| random seed 1']
    pvr = json.loads((tmp_path/'pvr.json').read_text())
    units = pvr['0']['pahcl']['pascal']['random']['class_units']
    assert set(units) == {'normal', 'murmur', 'extrasystole'}, units
    assert set(pvr) == {'0', '1'} and set(pvr['0']) == {'pahcl', 'sub_only', 'mean_difference', 'crossfit'}
    mean_rows = [l for l in lines if l.startswith('| pascal, physionet2016 |')]      # the mean over the tasks, per encoder
    assert [l.split(' | ')[1] for l in mean_rows] == ['pahcl', 'sub_only'] and all(l.count('[') == 2 for l in mean_rows), tool.stdout
    m = pvr['0']['mean_difference']['pahcl']
    assert m['difference'] == pytest.approx(sum(pvr['0']['pahcl'][t]['difference'] for t in ('pascal', 'physionet2016')) / 2)
    assert m['difference_ci'][0] <= m['difference'] <= m['difference_ci'][1] and pvr['0']['crossfit'] is False
    assert pvr['0']['pahcl']['pascal']['random'] == pvr['0']['sub_only']['pascal']['random']      # one random encoder per seed
    assert pvr['0']['pahcl']['pascal']['random'] != pvr['1']['pahcl']['pascal']['random']
    cf = subprocess.run([sys.executable, str(ROOT/'tools'/'quality_probe_vs_random.py'), '--out', str(tmp_path/'q'), '--variants', 'pahcl',
                         '--crossfit', '--json', str(tmp_path/'cf.json')], capture_output=True, text=True, timeout=600)
    assert cf.returncode == 0 and '| task (validation and test units)' in cf.stdout, cf.stderr[-3000:]
    cfj = json.loads((tmp_path/'cf.json').read_text())
    from pahcl.data import read_split
    for t in ('pascal', 'physionet2016'):          # the validation recordings are scored too
        n_val = read_split(tmp_path/'q'/'tasks'/t, 'val')[0].recording.nunique()
        assert n_val > 0 and cfj['0']['pahcl'][t]['random']['units'] == pvr['0']['pahcl'][t]['random']['units'] + n_val, t
    assert cfj['0']['crossfit'] is True
    bad = subprocess.run([sys.executable, str(ROOT/'tools'/'quality_probe_vs_random.py'), '--out', str(tmp_path/'q'), '--checkpoints', 'epoch_99.pt'],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and 'epoch_99.pt' in bad.stderr and 'Traceback' not in bad.stderr, bad.stderr

def test_bench_quality_cross_validation(pahcl, tmp_path):
    """Two folds: every recording a test recording once, pretraining per fold without its test subjects, pooled and paired scores;
    then the two databases each held out once."""
    import json
    from pahcl.data import read_split
    from pahcl.studies import QUALITY_METHODS, LODO_METHODS, ABLATIONS
    from pahcl.demo_data import make_physionet2016
    make_physionet2016(tmp_path/'raw'/'physionet2016', n_records={'training-a': (7, 7, (8, 9)), 'training-b': (7, 7, (8, 9))}, seed=5)
    r = pahcl('bench', 'quality', '--data-root', tmp_path/'raw', '--budget-minutes', '1', '--folds', '2', '--out', tmp_path/'q',
              '--json', timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    tests = [set(read_split(tmp_path/'q'/f'fold{f}'/'downstream'/'physionet2016', 'test')[0].recording) for f in (0, 1)]
    everyone = set(pd.concat(read_split(tmp_path/'q'/'fold0'/'downstream'/'physionet2016', s)[0] for s in ('train', 'val', 'test')).recording)
    assert not tests[0] & tests[1] and tests[0] | tests[1] == everyone          # each recording a test recording exactly once
    assert len(res['folds']) == 2 and res['tasks'] == res['pooled']
    assert res['counts']['physionet2016']['test']['recordings'] == len(everyone)
    for m, v in res['pooled']['physionet2016'].items():
        assert m in QUALITY_METHODS and v['n'] == len(everyone), (m, v['n'])     # pooled over the folds: every unit scored
        lo, hi = v['primary_ci']; assert lo <= hi, (m, v)
        assert v['minutes'] == pytest.approx(sum(f['tasks']['physionet2016'][m]['minutes'] for f in res['folds']), abs=0.011)
    for f in res['folds']:
        assert f['counts']['pretrain']['excluded_subjects'] > 0                     # each fold pretrains without its val/test subjects
        assert set(f['tasks']['physionet2016']) == set(QUALITY_METHODS) - set(ABLATIONS)      # no ablations without --ablations
        assert set(f['pretrain']) == {'pahcl'}
    p = res['paired']['physionet2016']
    assert set(p['scratch']) == {'vs_finetune'} and set(p['linear']) == {'vs_finetune', 'vs_scratch'}
    assert p['linear']['vs_finetune']['units'] == len(everyone) and p['linear']['vs_finetune']['ci'][0] <= p['linear']['vs_finetune']['ci'][1]
    assert '2-fold cross-validation' in (tmp_path/'q'/'quality.md').read_text()
    lodo = res['lodo']                                                             # leave one database out: each database tested once
    assert list(lodo['databases']) == ['training-a', 'training-b'] and set(lodo['mean']) == set(LODO_METHODS)
    for d in ('training-a', 'training-b'):
        held = read_split(tmp_path/'q'/f'lodo_{d}'/'downstream'/'physionet2016', 'test')[0]
        assert set(held.source) == {d} and lodo['counts'][d]['test']['recordings'] == 14
        assert lodo['pretrain'][d]['pahcl']['epochs'] >= 1 and set(lodo['pretrain'][d]) == {'pahcl'}
    assert all(v['n'] == len(everyone) for v in lodo['pooled'].values())
    assert 'leave one database out' in (tmp_path/'q'/'quality.md').read_text()
    assert any('leave one database out' in k for k in res['targets'])
    from pahcl.studies import read_answers, paired_runs                          # every unit's answer kept, for pairing a later run
    ans = read_answers(tmp_path/'q'/'answers.csv.gz')
    assert set(ans.split) == {'cv', 'lodo'} and set(ans[ans.split == 'lodo'].method) == set(LODO_METHODS)
    for split in ('cv', 'lodo'):
        assert set(ans[(ans.split == split) & (ans.method == 'finetune')].recording) == everyone
    lm = {'normal': 0, 'abnormal': 1}
    assert paired_runs(ans, ans, 'physionet2016', lm) == dict(auroc_diff=0.0, ci=[0.0, 0.0], units=len(everyone))
    bad = pahcl('bench', 'quality', '--data-root', tmp_path/'raw', '--folds', '0')
    assert bad.returncode == 2 and '--folds 0' in bad.stderr and 'Traceback' not in bad.stderr, bad.stderr
    for flags, said in ((['--seed', '1', '--seeds', '2', '3'], 'not both'), (['--seeds', '2', '2'], 'each seed once')):
        bad = pahcl('bench', 'quality', '--data-root', tmp_path/'raw', *flags)
        assert bad.returncode == 2 and said in bad.stderr and 'Traceback' not in bad.stderr, bad.stderr

SCORING_UNIT = {'physionet2016': 'recordings', 'pascal': 'recordings', 'circor_murmur': 'subjects', 'circor_outcome': 'subjects'}

def test_bench_quality_bad_input(pahcl, tmp_path):
    r = pahcl('bench', 'quality')
    assert r.returncode == 2 and '--data-root' in r.stderr and 'Traceback' not in r.stderr, r.stderr
    (tmp_path/'empty').mkdir()
    r = pahcl('bench', 'quality', '--data-root', tmp_path/'empty', '--out', tmp_path/'q')
    assert r.returncode == 2 and 'empty' in r.stderr and 'Traceback' not in r.stderr, r.stderr

def test_bench_demo_end_to_end(pahcl, tiny_demo, tmp_path):
    "Every fine-tuning mode, scored on new subjects with bootstrap intervals; the JSON line, the files, the few-shot subset."
    import json
    from pahcl.studies import DEMO_MODES
    from pahcl.demo_data import make_physionet2016
    ext = tmp_path/'ext'
    make_physionet2016(ext/'physionet2016', n_records={'training-e': (6, 6, (6, 7))}, seed=11)
    r = pahcl('bench', 'demo', '--data-root', tiny_demo['raw'], '--test-root', ext, '--tasks', 'physionet2016', '--min-steps', '2',
              '--pretrain-epochs', '1', '--shot-ratio', '0.5', '--out', tmp_path/'d', '--json', timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert list(res['tasks']) == ['physionet2016'] and tuple(res['tasks']['physionet2016']) == DEMO_MODES
    for m, v in res['tasks']['physionet2016'].items():
        assert v['units'] == 12 and v['level'] == 'recording' and v['chance'] == 0.5, (m, v)
        for k in ('auroc', 'balanced_accuracy'):
            lo, hi = v[f'{k}_ci']
            assert 0 <= lo <= v[k] <= hi <= 1, (m, k, v)
        assert v['beats_chance'] == (v['auroc_ci'][0] > 0.5 and v['balanced_accuracy_ci'][0] > 0.5)
        assert v['primary_metric'] == 'recording_auroc' and v['primary'] == v['auroc'] and 'auroc' in v['best_model']
    assert res['all_beat_chance'] == all(v['beats_chance'] for v in res['tasks']['physionet2016'].values())
    runs = {m: json.loads((tmp_path/'d'/'runs'/f'physionet2016_{m}'/'final_metrics.json').read_text()) for m in DEMO_MODES}
    assert runs['fewshot']['train_subjects'] < runs['finetune']['train_subjects'] == runs['linear']['train_subjects']
    assert runs['scratch']['init'] != 'pretrained' and runs['linear']['mode'] == 'linear'
    pr = res['probes']['physionet2016']
    assert set(pr) == {'pretrained', 'random', 'difference', 'difference_ci'} and pr['pretrained']['units'] == pr['random']['units'] == 12
    assert pr['difference'] == pytest.approx(pr['pretrained']['auroc'] - pr['random']['auroc'])
    assert set(res['probes_last']['physionet2016']) == set(pr) and res['pretrain_best_epoch'] >= 0   # last.pt probed too
    m = res['probes_mean']['best']           # one task: the mean over the tasks is its difference
    assert m['difference'] == pytest.approx(pr['difference']) and m['difference_ci'][0] <= m['difference'] <= m['difference_ci'][1]
    assert (tmp_path/'d'/'demo_modes.md').read_text().count('| physionet2016 |') == 6        # four modes, best_model and last.pt probes
    assert (tmp_path/'d'/'demo_modes.md').read_text().count('| mean over the tasks |') == 2
    r = pahcl('bench', 'demo', '--data-root', tmp_path/'nowhere', '--test-root', ext, '--out', tmp_path/'e')
    assert r.returncode == 2 and 'nowhere' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
