"""Evaluate, cross-dataset label mapping, ensembles, summaries, `pahcl run`, `pahcl demo`, and the papermill notebooks."""
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from conftest import TINY_MODEL, ROOT
from pahcl.config import load_config
from pahcl.finetune import finetune

FAST = ['training.num_workers=0', 'training.warmup_epochs=0', 'training.batch_size=32']

@pytest.fixture(scope='module')
def runs(tiny_demo, tmp_path_factory):
    "Two circor_outcome runs (seeds 1, 2) from scratch."
    out = tmp_path_factory.mktemp('outputs')
    for s in (1, 2):
        finetune(load_config('finetune', 'circor_outcome', sets=[*TINY_MODEL, *FAST, 'training.num_epochs=2', f'seed={s}']),
                 from_scratch=True, data_dir=tiny_demo['downstream'], output_dir=out, experiment_name=f'seed_{s}', quiet=True)
    return out

def test_evaluate_cli(pahcl, tiny_demo, runs, tmp_path):
    ck = runs/'circor_outcome_seed_1'/'best_model.pt'
    r = pahcl('evaluate', '--checkpoint', ck, '--task', 'circor_outcome', '--data-dir', tiny_demo['downstream'], '--split', 'test',
              '--output-dir', tmp_path/'ev', '--json')
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path/'ev'/'metrics.json').read_text())
    fm = json.loads((runs/'circor_outcome_seed_1'/'final_metrics.json').read_text())
    for k in ['test_accuracy', 'test_f1_macro', 'test_auroc', 'test_patient_outcome_cost']:
        assert m[k] == pytest.approx(fm[k], rel=1e-6), k          # the same numbers fine-tuning reported
    for f in ['predictions_test.csv', 'confusion_matrix.csv', 'confusion_matrix.png', 'patient_confusion_matrix.csv']:
        assert (tmp_path/'ev'/f).exists(), f
    r = pahcl('evaluate', '--checkpoint', ck, '--task', 'circor_outcome', '--data-dir', tiny_demo['downstream'], '--split', 'val',
              '--output-dir', tmp_path/'val')
    assert r.returncode == 0 and 'val_accuracy' in r.stdout

def test_cross_dataset(pahcl, tiny_demo, runs, tmp_path):
    ck = runs/'circor_outcome_seed_1'/'best_model.pt'
    r = pahcl('evaluate', '--checkpoint', ck, '--task', 'physionet2016', '--data-dir', tiny_demo['downstream'], '--output-dir', tmp_path/'x')
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path/'x'/'metrics.json').read_text())
    assert m['trained_on'] == 'circor_outcome' and 'test_recording_macc' in m
    r = pahcl('evaluate', '--checkpoint', ck, '--task', 'pascal', '--data-dir', tiny_demo['downstream'])
    assert r.returncode == 2 and 'have no checkpoint class' in r.stderr and '--label-map' in r.stderr
    r = pahcl('evaluate', '--checkpoint', ck, '--task', 'pascal', '--data-dir', tiny_demo['downstream'],
              '--label-map', 'normal=Normal,murmur=Abnormal,extrasystole=Abnormal')
    assert r.returncode == 2 and 'two task classes' in r.stderr
    r = pahcl('evaluate', '--checkpoint', ck, '--task', 'physionet2016', '--data-dir', tiny_demo['downstream'], '--output-dir', tmp_path/'p',
              '--label-map', 'abnormal=Abnormal,normal=Normal')
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/'p'/'metrics.json').read_text())['test_accuracy'] == pytest.approx(m['test_accuracy'])
    r = pahcl('evaluate', '--checkpoint', tmp_path/'missing.pt', '--task', 'pascal', '--data-dir', tiny_demo['downstream'])
    assert r.returncode == 2 and 'missing.pt' in r.stderr

def test_ensemble_and_summarize(pahcl, tiny_demo, runs, tmp_path):
    cks = sorted(runs.glob('circor_outcome_seed_*/best_model.pt'))
    r = pahcl('ensemble', '--checkpoints', *cks, '--task', 'circor_outcome', '--data-dir', tiny_demo['downstream'], '--output-dir', tmp_path/'e')
    assert r.returncode == 0, r.stderr
    pe = pd.read_csv(tmp_path/'e'/'predictions_test.csv')
    p1, p2 = (pd.read_csv(c.parent/'predictions_test.csv') for c in cks)
    assert (pe['prob_Abnormal'] - (p1['prob_Abnormal'] + p2['prob_Abnormal']) / 2).abs().max() < 1e-5
    r = pahcl('summarize', '--output-dir', runs)
    assert r.returncode == 0 and 'circor_outcome_seed_1' in r.stdout and 'AUROC' in r.stdout
    assert (runs/'summary.csv').exists() and (runs/'summary.md').read_text().startswith('| task |')
    r = pahcl('summarize', '--output-dir', tmp_path/'none')
    assert r.returncode == 2 and 'pahcl finetune' in r.stderr

def test_run_train_all_linear(pahcl, tiny_demo, tmp_path):
    from pahcl.pretrain import pretrain
    from pahcl.training import RunLimits
    c = load_config('pretrain', sets=[*TINY_MODEL, 'projection.hidden_dim=32', 'projection.output_dim=16', 'training.num_workers=0'])
    pretrain(c, tiny_demo['processed'], tmp_path/'pt', epochs=1, batch_size=16, limits=RunLimits(max_steps_per_epoch=2), quiet=True)
    r = pahcl('run', 'train-all', 'linear', '--pretrained', tmp_path/'pt'/'best_model.pt', '--data-dir', tiny_demo['downstream'],
              '--output-dir', tmp_path/'out', '--epochs', '1', '--quiet', *sum([['--set', s] for s in FAST], []))
    assert r.returncode == 0, r.stderr
    for t in ['circor_murmur', 'circor_outcome', 'physionet2016', 'pascal']:
        m = json.loads((tmp_path/'out'/f'{t}_linear'/'final_metrics.json').read_text())
        assert m['mode'] == 'linear' and m['init'] == 'pretrained'
    r = pahcl('run', 'summarize', '--output-dir', tmp_path/'out')
    assert r.returncode == 0 and r.stdout.count('_linear') == 4

def test_demo_cli(pahcl, tmp_path):
    r = pahcl('demo', '--out', tmp_path/'demo', '--tasks', 'pascal', '--pretrain-epochs', '1', '--finetune-epochs', '1')
    assert r.returncode == 0, r.stderr
    assert 'done in' in r.stdout and (tmp_path/'demo'/'outputs'/'pascal_demo'/'final_metrics.json').exists()
    assert 'test subjects: too few to judge' in r.stdout          # the demo's 3 PASCAL test subjects say so beside their figure
    assert (tmp_path/'demo'/'data'/'downstream'/'pascal'/'train.csv').exists()
    assert (tmp_path/'demo'/'checkpoints'/'pretrain'/'best_model.pt').exists() and (tmp_path/'demo'/'outputs'/'summary.md').exists()

def test_papermill_pretrain(tiny_demo, tmp_path):
    r = subprocess.run([sys.executable, '-m', 'papermill', str(ROOT/'nbs'/'pretrain.ipynb'), str(tmp_path/'out.ipynb'),
                        '-p', 'processed_dir', str(tiny_demo['processed']), '-p', 'output_dir', str(tmp_path/'pt'),
                        '-p', 'exclude_tasks_dir', str(tiny_demo['downstream']), '-p', 'epochs', '1', '-p', 'preset', 'tiny',
                        '-p', 'max_steps_per_epoch', '2', '--cwd', str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path/'pt'/'best_model.pt').exists()
