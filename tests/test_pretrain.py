"""PA-HCL pretraining end to end: the command line, outputs, resume, subject exclusion, and `torchrun` with 2 CPU processes."""
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
from conftest import TINY_MODEL
from pahcl.config import load_config, ConfigError
from pahcl.data import task_subjects
from pahcl.models import load_checkpoint, load_encoder_only
from pahcl.pretrain import pretrain, pretrain_splits
from pahcl.training import RunLimits

def tiny_cfg(*extra):
    return load_config('pretrain', sets=[*TINY_MODEL, 'projection.hidden_dim=32', 'projection.output_dim=16', 'training.batch_size=16',
                                         'training.warmup_epochs=1', 'training.num_workers=0', 'training.save_interval=2',
                                         'evaluation.knn_max_train=200', 'evaluation.knn_max_val=100', 'evaluation.knn_min_subjects=0',
                                         *extra])

@pytest.fixture(scope='module')
def run3(tiny_demo, tmp_path_factory):
    "An uninterrupted 3-epoch run with the kNN check."
    out = tmp_path_factory.mktemp('pre')/'run'
    s = pretrain(tiny_cfg(), tiny_demo['processed'], out, epochs=3, exclude_tasks_dir=tiny_demo['downstream'],
                 limits=RunLimits(max_steps_per_epoch=4), quiet=True)
    return out, s

def test_outputs(run3):
    out, s = run3
    for f in ['best_model.pt', 'last.pt', 'epoch_2.pt', 'history.json', 'config.yaml', 'train.log', 'pretrain_summary.json']:
        assert (out/f).exists(), f
    assert list(out.glob('events.out.tfevents.*'))
    h = json.loads((out/'history.json').read_text())
    assert [r['epoch'] for r in h] == [0, 1, 2]
    for k in ['train_loss', 'train_cycle', 'train_sub', 'val_loss', 'val_alignment', 'val_uniformity', 'knn_mean', 'knn_pascal']:
        assert k in h[0], k
    assert s['criterion'] == 'knn_mean' and s['best'] == max(r['knn_mean'] for r in h)
    ck = load_checkpoint(out/'best_model.pt')
    assert ck['kind'] == 'pretrain' and set(ck['heads']) == {'cycle_head', 'sub_head'}
    enc = load_encoder_only(out/'best_model.pt')
    assert enc(torch.zeros(2, 1, 4000))[1].shape == (2, 16)

def test_too_few_validation_subjects_for_knn(tiny_demo, tmp_path):
    "Validation splits smaller than evaluation.knn_min_subjects are not scored by kNN; the validation loss chooses best_model.pt."
    s = pretrain(tiny_cfg('evaluation.knn_min_subjects=1000'), tiny_demo['processed'], tmp_path/'run', epochs=2,
                 exclude_tasks_dir=tiny_demo['downstream'], limits=RunLimits(max_steps_per_epoch=2), quiet=True)
    h = json.loads((tmp_path/'run'/'history.json').read_text())
    assert s['criterion'] == 'val_loss' and s['best'] == min(r['val_loss'] for r in h)
    assert not any(k.startswith('knn_') for r in h for k in r)
    assert 'fewer than evaluation.knn_min_subjects = 1000' in (tmp_path/'run'/'train.log').read_text()

def test_downstream_val_test_subjects_never_pretrained(tiny_demo):
    tr, va, info = pretrain_splits(tiny_demo['processed'], 0.2, 42, tiny_demo['downstream'])
    held = task_subjects(tiny_demo['downstream'])
    assert held and info['excluded_subjects'] == len(held)
    seen = set(zip(tr['dataset'], tr['subject'].astype(str))) | set(zip(va['dataset'], va['subject'].astype(str)))
    assert not seen & held
    assert not set(zip(tr['dataset'], tr['subject'])) & set(zip(va['dataset'], va['subject']))

def test_resume_equals_uninterrupted(run3, tiny_demo, tmp_path):
    "Stopped after epoch 0 (a time budget of 0 s), then resumed: the same history as the uninterrupted run."
    out = tmp_path/'run'
    kw = dict(exclude_tasks_dir=tiny_demo['downstream'], quiet=True)
    s1 = pretrain(tiny_cfg(), tiny_demo['processed'], out, epochs=3, limits=RunLimits(max_steps_per_epoch=4, time_budget_s=0), **kw)
    assert s1['epochs'] == 1 and s1['stopped_early']
    pretrain(tiny_cfg(), tiny_demo['processed'], out, epochs=3, resume=True, limits=RunLimits(max_steps_per_epoch=4), **kw)
    a = json.loads((run3[0]/'history.json').read_text()); b = json.loads((out/'history.json').read_text())
    assert len(b) == 3
    for ra, rb in zip(a, b):
        for k in ['train_loss', 'val_loss', 'knn_mean']: assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), (k, ra, rb)

def test_lambda_zero_and_momentum(tiny_demo, tmp_path):
    s = pretrain(tiny_cfg('loss.lambda_sub=0', 'momentum.enabled=true', 'momentum.queue_size=64'), tiny_demo['processed'],
                 tmp_path/'m', epochs=1, limits=RunLimits(max_steps_per_epoch=2), quiet=True)
    h = s['last']
    assert h['train_loss'] == pytest.approx(h['train_cycle'], rel=1e-5) and h['train_sub'] > 0

def test_positives_across_a_recording(run3, tiny_demo, tmp_path, monkeypatch):
    "loss.positives=recording: the second view comes from another cycle of the recording, a new one each epoch; it trains."
    import pahcl.pretrain as P
    seen = []
    class Spy(P.RecordingPairs):
        def __init__(self, *a, **k): super().__init__(*a, **k); seen.append(self)
    monkeypatch.setattr(P, 'RecordingPairs', Spy)
    s = pretrain(tiny_cfg('loss.positives=recording'), tiny_demo['processed'], tmp_path/'r', epochs=2,
                 exclude_tasks_dir=tiny_demo['downstream'], limits=RunLimits(max_steps_per_epoch=2), quiet=True)
    h = json.loads((tmp_path/'r'/'history.json').read_text())
    assert s['epochs'] == 2 and all(r['train_loss'] > 0 for r in h)
    train = [d for d in seen if len(d) > 100]                                  # one training dataset per epoch (and the val ones)
    assert len(train) == 2 and train[0].seed != train[1].seed
    assert [train[0].partner(i) for i in range(50)] != [train[1].partner(i) for i in range(50)]
    a = json.loads((run3[0]/'history.json').read_text())
    assert h[0]['train_loss'] != pytest.approx(a[0]['train_loss'], rel=1e-4)   # not the two-views-of-one-cycle run
    with pytest.raises(ConfigError, match="loss.positives"): tiny_cfg('loss.positives=patient')

def test_cli(pahcl, tiny_demo, tmp_path):
    r = pahcl('pretrain', '--processed-dir', tiny_demo['processed'], '--output-dir', tmp_path/'cli', '--epochs', '1',
              '--batch-size', '8', '--max-steps-per-epoch', '2', '--quiet', *sum([['--set', s] for s in TINY_MODEL], []))
    assert r.returncode == 0, r.stderr
    assert 'pretrained 1 epochs' in r.stdout and (tmp_path/'cli'/'best_model.pt').exists()
    r = pahcl('pretrain', '--processed-dir', tmp_path/'nothing', '--output-dir', tmp_path/'x', '--quiet')
    assert r.returncode == 2 and 'nothing' in r.stderr and 'Traceback' not in r.stderr

STEP = textwrap.dedent('''
    import os, sys, torch, torch.nn as nn
    from pahcl.config import load_config
    from pahcl.pretrain import build_pahcl, pahcl_loss
    from pahcl.training import init_distributed
    sets = sys.argv[2].split(';')
    rank, world, dev = init_distributed('cpu')
    cfg = load_config('pretrain', sets=sets + ['projection.hidden_dim=32', 'projection.output_dim=16'])
    torch.manual_seed(0)
    model = build_pahcl(cfg)
    for m in model.modules():                       # per-rank BatchNorm statistics are the one expected difference
        if isinstance(m, nn.modules.batchnorm._BatchNorm): m.eval()
    g = torch.Generator().manual_seed(1)
    N = 8
    v1, v2 = torch.randn(N, 1, 4000, generator=g), torch.randn(N, 1, 4000, generator=g)
    b = torch.tensor([[0, 600, 1100, 1600, 3000]] * N)
    sl = slice(rank * N // world, (rank + 1) * N // world)
    ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    r = pahcl_loss(ddp, dict(view1=v1[sl], view2=v2[sl], bounds1=b[sl], bounds2=b[sl]), cfg['loss'])
    r['loss'].backward()
    if rank == 0:
        torch.save({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, sys.argv[1])
    if world > 1:                                   # leave together: a rank that exits while the other is busy can abort
        torch.distributed.barrier(); torch.distributed.destroy_process_group()
''')

def test_torchrun_two_processes_match_one(tmp_path):
    "One step on 2 gloo processes (negatives gathered, gradients averaged by DDP) gives the gradients of 1 process on the whole batch."
    script = tmp_path/'step.py'; script.write_text(STEP)
    sets = ';'.join(TINY_MODEL)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    one = subprocess.run([sys.executable, script, tmp_path/'g1.pt', sets], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29531', script,
                          tmp_path/'g2.pt', sets], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    g1, g2 = torch.load(tmp_path/'g1.pt', weights_only=True), torch.load(tmp_path/'g2.pt', weights_only=True)
    assert g1.keys() == g2.keys() and len(g1) > 10
    for k in g1:                                   # float32 sums in another order: compare against the tensor's scale
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-3, atol=1e-5 * float(g1[k].abs().max()) + 1e-9, msg=k)

def test_torchrun_cli(tiny_demo, tmp_path):
    "`torchrun --nproc_per_node=2 -m pahcl pretrain` trains and writes one set of outputs."
    env = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29532', '-m', 'pahcl',
                        'pretrain', '--processed-dir', tiny_demo['processed'], '--output-dir', tmp_path/'ddp', '--epochs', '1',
                        '--batch-size', '8', '--max-steps-per-epoch', '2', '--quiet', *sum([['--set', s] for s in TINY_MODEL], [])],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path/'ddp'/'pretrain_summary.json').read_text())
    assert s['world_size'] == 2 and (tmp_path/'ddp'/'best_model.pt').exists()

def test_nan_loss_stops_with_step_named(tiny_demo, tmp_path, monkeypatch):
    "A non-finite loss stops the run, naming the step and the cycles; the last good checkpoint is kept."
    import pahcl.pretrain as P
    from pahcl.pretrain import PretrainError
    real, calls = P.pahcl_loss, []
    def flaky(*a, **k):
        r = real(*a, **k)
        if torch.is_grad_enabled(): calls.append(1)               # training steps only, not validation
        if torch.is_grad_enabled() and len(calls) == 4: r['loss'] = r['loss'] * float('nan')
        return r
    monkeypatch.setattr(P, 'pahcl_loss', flaky)
    out = tmp_path/'nan'
    with pytest.raises(PretrainError, match=r'epoch 1, step 1: the loss is nan .*cycle_\d+\.npy.*last\.pt is the last good checkpoint'):
        P.pretrain(tiny_cfg(), tiny_demo['processed'], out, epochs=3, limits=RunLimits(max_steps_per_epoch=2), quiet=True)
    assert load_checkpoint(out/'last.pt')['epoch'] == 0

def test_resume_of_a_finished_run(run3, tiny_demo, tmp_path):
    "--resume on a run whose last epoch is done finishes at once with the same summary (a kill can land after the last epoch)."
    import shutil
    out = tmp_path/'done'; shutil.copytree(run3[0], out)
    s = pretrain(tiny_cfg(), tiny_demo['processed'], out, epochs=3, resume=True, exclude_tasks_dir=tiny_demo['downstream'],
                 limits=RunLimits(max_steps_per_epoch=4), quiet=True)
    assert s['epochs'] == 3 and s['best'] == run3[1]['best']
