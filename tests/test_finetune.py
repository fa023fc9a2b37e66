"""Fine-tuning end to end: the guide's flags and outputs, the three modes, resume, training keys, `torchrun`."""
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest, torch
from conftest import TINY_MODEL
from pahcl.config import load_config
from pahcl.data import read_split
from pahcl.finetune import finetune, load_finetuned
from pahcl.models import load_checkpoint
from pahcl.pretrain import pretrain
from pahcl.training import RunLimits

FAST = ['training.num_workers=0', 'training.warmup_epochs=1', 'training.batch_size=16', 'evaluation.selection_min_subjects=0']

def cfg(task='pascal', *extra):
    return load_config('finetune', task, sets=[*TINY_MODEL, *FAST, *extra])

@pytest.fixture(scope='module')
def pretrained(tiny_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp('pt')
    c = load_config('pretrain', sets=[*TINY_MODEL, 'projection.hidden_dim=32', 'projection.output_dim=16', 'training.num_workers=0'])
    pretrain(c, tiny_demo['processed'], out, epochs=1, batch_size=16, limits=RunLimits(max_steps_per_epoch=3), quiet=True)
    return out/'best_model.pt'

def test_cli_full_outputs(pahcl, tiny_demo, pretrained, tmp_path):
    r = pahcl('finetune', '--task', 'circor_murmur', '--pretrained', pretrained, '--data-dir', tiny_demo['downstream'],
              '--output-dir', tmp_path, '--experiment-name', 'exp1', '--epochs', '2', '--lr', '1e-3', '--batch-size', '16',
              '--seed', '42', '--quiet', '--json', *sum([['--set', s] for s in FAST], []))
    assert r.returncode == 0, r.stderr
    run = tmp_path/'circor_murmur_exp1'
    for f in ['config.yaml', 'train.log', 'best_model.pt', 'final_model.pt', 'final_metrics.json', 'predictions_test.csv',
              'confusion_matrix.csv', 'confusion_matrix.png', 'patient_confusion_matrix.csv', 'history.json']:
        assert (run/f).exists(), f
    assert list(run.glob('events.out.tfevents.*'))
    m = json.loads((run/'final_metrics.json').read_text())
    for k in ['test_accuracy', 'test_f1', 'test_f1_macro', 'test_auroc', 'test_precision', 'test_recall', 'test_f1_weighted',
              'test_auprc', 'test_specificity', 'test_patient_f1_macro', 'test_recording_accuracy',
              'test_patient_murmur_weighted_accuracy']:
        assert k in m, k
    assert m['init'] == 'pretrained' and m['mode'] == 'finetune' and m['epochs_trained'] == 2
    pred = pd.read_csv(run/'predictions_test.csv')
    test, _ = read_split(tiny_demo['downstream']/'circor_murmur', 'test')
    assert len(pred) == len(test) and {'subject', 'recording', 'prob_Present', 'prob_Absent', 'prob_Unknown'} <= set(pred.columns)
    assert json.loads(r.stdout.strip().splitlines()[-1])['test_accuracy'] == pytest.approx(m['test_accuracy'])
    model, ck = load_finetuned(run/'best_model.pt')
    assert ck['label_map'] == {'Present': 0, 'Absent': 1, 'Unknown': 2} and ck['task'] == 'circor_murmur'

def test_pretrained_required(pahcl, tiny_demo, tmp_path):
    r = pahcl('finetune', '--task', 'pascal', '--data-dir', tiny_demo['downstream'], '--output-dir', tmp_path, cwd=tmp_path)
    assert r.returncode == 2 and '--from-scratch' in r.stderr and 'Traceback' not in r.stderr   # no pretrain.checkpoint_path here
    assert 'pretrain.checkpoint_path (checkpoints/pretrain/best_model.pt)' in r.stderr
    r = pahcl('finetune', '--task', 'pascal', '--pretrained', tmp_path/'none.pt', '--data-dir', tiny_demo['downstream'], '--output-dir', tmp_path)
    assert r.returncode == 2 and 'none.pt' in r.stderr
    r = pahcl('finetune', '--task', 'pascal', '--from-scratch', '--data-dir', tmp_path/'nowhere', '--output-dir', tmp_path)
    assert r.returncode == 2 and 'pahcl prepare' in r.stderr

def test_linear_eval_freezes_encoder_and_batchnorm(tiny_demo, pretrained, tmp_path):
    m = finetune(cfg('pascal', 'training.num_epochs=2'), pretrained=pretrained, data_dir=tiny_demo['downstream'],
                 output_dir=tmp_path, experiment_name='lin', linear_eval=True, quiet=True)
    assert m['mode'] == 'linear'
    before = load_checkpoint(pretrained)['encoder']; after = load_checkpoint(tmp_path/'pascal_lin'/'final_model.pt')['encoder']
    assert any('running_mean' in k for k in before)
    for k in before: assert torch.equal(before[k], after[k]), k          # weights and BatchNorm statistics untouched

def test_few_shot_takes_subjects(tiny_demo, pretrained, tmp_path):
    m = finetune(cfg('physionet2016', 'training.num_epochs=1'), pretrained=pretrained, data_dir=tiny_demo['downstream'],
                 output_dir=tmp_path, experiment_name='fs', few_shot_ratio=0.3, quiet=True)
    full, _ = read_split(tiny_demo['downstream']/'physionet2016', 'train')
    assert m['mode'] == 'fewshot' and m['train_subjects'] < full['subject'].nunique() and m['train_subjects'] >= 2

def test_resume_equals_uninterrupted(tiny_demo, tmp_path):
    kw = dict(from_scratch=True, data_dir=tiny_demo['downstream'], quiet=True)
    a = finetune(cfg('pascal', 'training.num_epochs=3'), output_dir=tmp_path/'a', experiment_name='r', **kw)
    b0 = finetune(cfg('pascal', 'training.num_epochs=3'), output_dir=tmp_path/'b', experiment_name='r', limits=RunLimits(time_budget_s=0), **kw)
    assert b0['epochs_trained'] == 1
    b = finetune(cfg('pascal', 'training.num_epochs=3'), output_dir=tmp_path/'b', experiment_name='r', resume=True, **kw)
    assert b['epochs_trained'] == 3
    for k in ['test_accuracy', 'test_f1_macro', 'test_auroc', 'best_epoch']: assert a[k] == pytest.approx(b[k]), k

def _hist(out, name): return json.loads((out/f'pascal_{name}'/'history.json').read_text())

def test_training_keys_have_effect(tiny_demo, tmp_path):
    "Each training key changes what the run does."
    kw = dict(from_scratch=True, data_dir=tiny_demo['downstream'], output_dir=tmp_path, quiet=True)
    def go(name, *sets, **more):
        return finetune(cfg('pascal', 'training.num_epochs=2', *sets), experiment_name=name, **kw, **more)
    base = go('base'); hb = _hist(tmp_path, 'base')
    assert go('epochs', 'training.num_epochs=1')['epochs_trained'] == 1
    go('lr', 'training.learning_rate=1e-2'); assert _hist(tmp_path, 'lr')[0]['lr'] != hb[0]['lr']
    go('warm', 'training.warmup_epochs=0'); assert _hist(tmp_path, 'warm')[0]['lr'] != hb[0]['lr']
    go('minlr', 'training.min_lr=5e-4'); assert _hist(tmp_path, 'minlr')[-1]['lr'] == pytest.approx(5e-4)
    for name, s in [('wd', 'training.weight_decay=0.5'), ('scale', 'training.encoder_lr_scale=1.0'), ('ls', 'training.label_smoothing=0.0'),
                    ('cw', 'training.use_class_weights=false'), ('clip', 'training.grad_clip_norm=0.001'), ('bs', 'training.batch_size=4')]:
        go(name, s)
        assert _hist(tmp_path, name)[-1]['train_loss'] != hb[-1]['train_loss'], name
    go('save', 'training.save_interval=1'); assert (tmp_path/'pascal_save'/'epoch_1.pt').exists() and not (tmp_path/'pascal_base'/'epoch_1.pt').exists()
    m = go('patience', 'training.num_epochs=6', 'training.early_stopping_patience=1', 'training.learning_rate=1e-12', 'training.min_lr=1e-13')
    assert m['stopped_early'] and m['epochs_trained'] == 2
    go('workers', 'training.num_workers=2'); assert _hist(tmp_path, 'workers')[-1]['train_loss'] == pytest.approx(hb[-1]['train_loss'], rel=1e-5)

def test_small_validation_split_keeps_last_epoch(tiny_demo, tmp_path):
    "With fewer validation subjects than evaluation.selection_min_subjects, every epoch replaces best_model.pt and nothing stops early."
    m = finetune(cfg('pascal', 'training.num_epochs=4', 'training.early_stopping_patience=1', 'training.learning_rate=1e-12',
                     'training.min_lr=1e-13', 'evaluation.selection_min_subjects=1000'), experiment_name='small', from_scratch=True,
                 data_dir=tiny_demo['downstream'], output_dir=tmp_path, quiet=True)
    assert not m['stopped_early'] and m['epochs_trained'] == 4
    assert all(r['best'] for r in _hist(tmp_path, 'small'))
    assert load_checkpoint(tmp_path/'pascal_small'/'best_model.pt')['epoch'] == 3
    assert 'fewer than evaluation.selection_min_subjects = 1000' in (tmp_path/'pascal_small'/'train.log').read_text()

def test_torchrun_finetune_matches_one_process(tiny_demo, pretrained, tmp_path):
    """2 gloo processes (per-process batch 8) against 1 process (batch 16), linear evaluation without dropout: the same
    global batches and averaged gradients, so the same model; tolerance 0.05 on each metric (the sampler repeats up to
    one cycle per epoch so the two processes get equal shares)."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    sets = [*FAST, 'training.use_class_weights=false', 'downstream.dropout=0.0', 'training.batch_size=16']
    args = ['finetune', '--task', 'pascal', '--pretrained', pretrained, '--data-dir', tiny_demo['downstream'], '--linear-eval',
            '--output-dir', tmp_path, '--epochs', '2', '--quiet', *sum([['--set', s] for s in sets], [])]
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29533', '-m', 'pahcl',
                        *map(str, args), '--experiment-name', 'ddp'], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r1 = subprocess.run([sys.executable, '-m', 'pahcl', *map(str, args), '--experiment-name', 'one'], capture_output=True, text=True,
                        env=env, timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    m2 = json.loads((tmp_path/'pascal_ddp'/'final_metrics.json').read_text())
    m1 = json.loads((tmp_path/'pascal_one'/'final_metrics.json').read_text())
    assert m2['world_size'] == 2 and m1['world_size'] == 1
    for k in ['test_accuracy', 'test_f1_macro', 'test_auroc', 'test_patient_f1_macro']:
        assert abs(m2[k] - m1[k]) <= 0.05, (k, m1[k], m2[k])

def test_shipped_encoder_by_name(pahcl, tiny_demo, tmp_path):
    "`--pretrained pahcl-tiny` fine-tunes from the encoder shipped in the package; its model card and facts lie beside it."
    from pahcl.models import pretrained_path
    ship = pretrained_path('pahcl-tiny')
    assert ship.exists() and ship.with_suffix('.md').exists() and ship.with_suffix('.json').exists()
    assert ship.stat().st_size < 5e6 and '## Intended use' in ship.with_suffix('.md').read_text()
    r = pahcl('finetune', '--task', 'pascal', '--pretrained', 'pahcl-tiny', '--data-dir', tiny_demo['downstream'], '--output-dir', tmp_path,
              '--epochs', '1', '--quiet', *sum([['--set', s] for s in FAST], []))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path/'pascal_downstream'/'final_metrics.json').read_text())
    assert m['init'] == 'pretrained' and m['pretrained'].endswith('pahcl-tiny.pt')

def test_make_pretrained_tool(tiny_demo, tmp_path):
    "tools/make_pretrained.py pretrains on a processed folder and writes the encoder, its facts and its model card."
    tool = Path(__file__).resolve().parents[1]/'tools'/'make_pretrained.py'
    r = subprocess.run([sys.executable, tool, '--processed', tiny_demo['processed'], '--minutes', '0.1', '--out', tmp_path],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    facts = json.loads((tmp_path/'pahcl-tiny.json').read_text())
    assert facts['epochs'] >= 1 and facts['counts']['subjects'] > 0 and facts['model_config']['mamba_d_model'] == 32
    assert load_checkpoint(tmp_path/'pahcl-tiny.pt')['kind'] == 'pretrain'
    assert f"{facts['counts']['cycles']:,} cycles" in (tmp_path/'pahcl-tiny.md').read_text()
    r = subprocess.run([sys.executable, tool, '--minutes', '1'], capture_output=True, text=True)
    assert r.returncode == 2 and '--data-root or --processed' in r.stderr
    (tmp_path/'pahcl-tiny.md').unlink()                       # --card-only writes the card again from the facts, training nothing
    r = subprocess.run([sys.executable, tool, '--card-only', '--out', tmp_path], capture_output=True, text=True)
    assert r.returncode == 0 and f"{facts['counts']['cycles']:,} cycles" in (tmp_path/'pahcl-tiny.md').read_text(), r.stderr
    r = subprocess.run([sys.executable, tool, '--card-only', '--out', tmp_path/'none'], capture_output=True, text=True)
    assert r.returncode == 2 and 'pahcl-tiny.json not found' in r.stderr
