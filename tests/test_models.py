"""Encoders, heads and checkpoints beyond the notebook's cell tests: round trips of every encoder type through
`torch.load(weights_only=True)`, tampered and foreign files, DDP-wrapped encoders, gradients of the
bidirectional encoder, the packaged configs, and mambapy layers through `layer_factory` when mambapy is installed."""
import os, pickle, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn as nn
from pahcl.config import load_config
from pahcl.models import (CHECKPOINT_VERSION, ENCODER_TYPES, MODEL_PRESETS, CheckpointError, CycleClassifier,
                          ProjectionHead, apply_preset, build_encoder, load_checkpoint, load_classifier,
                          load_encoder_only, pool_substructures, resolve_model_config, save_checkpoint)

TINY = dict(cnn_channels=[4, 8, 8], cnn_kernel_sizes=[7, 5, 3], cnn_strides=[2, 2, 2], mamba_d_model=16,
            mamba_n_layers=2, mamba_d_state=4, transformer_heads=2)

def _cycles(n=3, T=160, seed=0):
    return torch.randn(n, T, generator=torch.Generator().manual_seed(seed))

def _trained(encoder_type, seed=0, **kw):
    "A tiny encoder and heads after one optimizer step, so that no weight is at its initial value; eval mode."
    torch.manual_seed(seed)
    enc = build_encoder({**TINY, 'encoder_type': encoder_type, **kw})
    proj = ProjectionHead(enc.out_dim, 32, 8)
    clf = CycleClassifier(enc, 3, hidden_dim=8)
    opt = torch.optim.AdamW([*clf.parameters(), *proj.parameters()], lr=1e-2)
    x = _cycles()
    frames, pooled = enc(x)
    (proj(pooled).square().mean() + clf.classifier(pooled).logsumexp(-1).mean()).backward()
    opt.step()
    return enc.eval(), proj.eval(), clf.eval(), opt

@pytest.mark.parametrize('encoder_type', ENCODER_TYPES)
def test_round_trip_every_encoder(tmp_path, encoder_type):
    enc, proj, clf, opt = _trained(encoder_type)
    x = _cycles(seed=1)
    with torch.no_grad(): frames, pooled = enc(x); logits = clf(x); z = proj(pooled)
    pre = save_checkpoint(tmp_path/'pretrain'/'best_model.pt', kind='pretrain', encoder=enc, heads={'projection': proj},
                          config=load_config('pretrain'), epoch=7, metrics={'loss': np.float64(1.25)}, optimizer=opt)
    fin = save_checkpoint(tmp_path/'pascal'/'best_model.pt', kind='finetune', encoder=clf.encoder,
                          heads={'classifier': clf.classifier}, config=load_config('finetune', task='pascal'), epoch=np.int32(2),
                          task='pascal', label_map={'normal': 0, 'murmur': 1, 'extrasystole': 2},
                          metrics={'f1_macro': np.float32(0.5), 'per_class': np.array([0.1, 0.9])})
    for p in (pre, fin):
        raw = torch.load(p, weights_only=True)                        # plain: no pahcl or numpy types inside
        assert raw['format'] == 'pahcl' and raw['version'] == CHECKPOINT_VERSION and raw['model_config'] == enc.config
        assert sorted(os.listdir(p.parent)) == ['best_model.pt']       # no temporary file left behind
    ck = load_checkpoint(fin)
    assert (ck['kind'], ck['epoch'], ck['task'], type(ck['metrics']['f1_macro'])) == ('finetune', 2, 'pascal', float)
    assert torch.equal(ck['metrics']['per_class'], torch.tensor([0.1, 0.9], dtype=torch.float64))
    assert load_checkpoint(pre)['config']['loss']['temperature'] == 0.07
    with torch.no_grad():
        for p in (pre, fin):                                          # the encoder comes out of either kind
            f2, p2 = load_encoder_only(p).eval()(x)
            torch.testing.assert_close(f2, frames); torch.testing.assert_close(p2, pooled)
        torch.testing.assert_close(load_classifier(fin).eval()(x), logits)
        proj2 = ProjectionHead(enc.out_dim, 32, 8); proj2.load_state_dict(load_checkpoint(pre)['heads']['projection'])
        torch.testing.assert_close(proj2.eval()(pooled), z)
    # resuming: the optimizer state goes back into a fresh optimizer
    enc3 = load_encoder_only(pre)
    opt3 = torch.optim.AdamW(enc3.parameters(), lr=1e-2)
    opt_sd = load_checkpoint(pre)['optimizer']
    assert opt_sd['param_groups'][0]['lr'] == 1e-2 and len(opt_sd['state']) > 0
    with pytest.raises(CheckpointError, match='no classifier head'): load_classifier(pre)

def test_overwrite_keeps_one_file(tmp_path):
    enc, *_ = _trained('cnn')
    p = tmp_path/'ck.pt'
    save_checkpoint(p, kind='pretrain', encoder=enc, epoch=1)
    save_checkpoint(p, kind='pretrain', encoder=enc, epoch=2)
    assert load_checkpoint(p)['epoch'] == 2 and os.listdir(tmp_path) == ['ck.pt']

class _Touch:
    "Unpickling this object would create `target`: the stand-in for code a hostile checkpoint runs."
    def __init__(self, target): self.target = str(target)
    def __reduce__(self): return (Path.touch, (Path(self.target),))

def test_tampered_files_refused(tmp_path):
    enc, *_ = _trained('cnn_mamba')
    good = save_checkpoint(tmp_path/'good.pt', kind='pretrain', encoder=enc)
    raw = torch.load(good, weights_only=True)
    marker = tmp_path/'code_ran'
    # a real checkpoint with a payload slipped into it
    raw['extra'] = {'note': _Touch(marker)}
    torch.save(raw, tmp_path/'tampered.pt')
    with pytest.raises(CheckpointError, match=r'tampered\.pt: refused to load.*weights_only=False'): load_checkpoint(tmp_path/'tampered.pt')
    with pytest.raises(CheckpointError, match='refused'): load_encoder_only(tmp_path/'tampered.pt')
    # an old-style plain pickle carrying the same
    with open(tmp_path/'legacy.pt', 'wb') as f: pickle.dump({'format': 'pahcl', 'x': _Touch(marker)}, f, protocol=2)
    with pytest.raises(CheckpointError, match='legacy.pt'): load_checkpoint(tmp_path/'legacy.pt')
    assert not marker.exists()
    # cut short, as by a full disk
    data = good.read_bytes()
    (tmp_path/'short.pt').write_bytes(data[:len(data)//2])
    with pytest.raises(CheckpointError, match=r'short\.pt: not a'): load_checkpoint(tmp_path/'short.pt')
    # not pahcl's, too new, damaged
    torch.save(enc.state_dict(), tmp_path/'bare.pt')
    with pytest.raises(CheckpointError, match='not a pahcl checkpoint'): load_encoder_only(tmp_path/'bare.pt')
    torch.save({**torch.load(good, weights_only=True), 'version': CHECKPOINT_VERSION + 1}, tmp_path/'new.pt')
    with pytest.raises(CheckpointError, match='upgrade pahcl'): load_checkpoint(tmp_path/'new.pt')
    torch.save({k: v for k, v in torch.load(good, weights_only=True).items() if k != 'encoder'}, tmp_path/'noenc.pt')
    with pytest.raises(CheckpointError, match="no 'encoder' entry"): load_checkpoint(tmp_path/'noenc.pt')
    assert isinstance(CheckpointError('x'), ValueError)

def test_other_architecture_refused(tmp_path):
    enc, *_ = _trained('cnn_mamba')
    p = save_checkpoint(tmp_path/'m.pt', kind='pretrain', encoder=enc)
    with pytest.raises(CheckpointError) as e: load_encoder_only(p, build_encoder({**TINY, 'encoder_type': 'cnn_transformer'}))
    msg = str(e.value)
    assert "m.pt" in msg and "encoder_type: checkpoint 'cnn_mamba', encoder 'cnn_transformer'" in msg
    assert 'missing: layers.0.self_attn' in msg and 'unexpected: layers.0.' in msg
    with pytest.raises(CheckpointError, match=r'mamba_d_state: checkpoint 4, encoder 8.*shape mismatch: layers\.0\.'):
        load_encoder_only(p, build_encoder({**TINY, 'mamba_d_state': 8}))
    with pytest.raises(CheckpointError, match=r'shape mismatch: frontend\.net\.6\.weight \(checkpoint \(8, 8, 3\), encoder \(12, 8, 3\)\)'):
        load_encoder_only(p, build_encoder({**TINY, 'cnn_channels': [4, 8, 12]}))
    # settings that do not change the weights load fine
    torch.testing.assert_close(load_encoder_only(p, build_encoder({**TINY, 'scan_impl': 'torch'})).eval()(_cycles())[0],
                               enc(_cycles())[0])

def test_ddp_prefix(tmp_path):
    "An encoder trained under DistributedDataParallel: saved through the wrapper, or as the wrapper's own state dict."
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    enc, *_ = _trained('cnn_transformer')
    dist.init_process_group('gloo', init_method=f'file://{tmp_path/"store"}', rank=0, world_size=1)
    try:
        ddp = DDP(enc)
        assert all(k.startswith('module.') for k in ddp.state_dict())
        p = save_checkpoint(tmp_path/'a.pt', kind='pretrain', encoder=ddp, heads={'projection': DDP(ProjectionHead(16, 32, 8))})
    finally: dist.destroy_process_group()
    raw = torch.load(p, weights_only=True)
    assert not any(k.startswith('module.') for k in [*raw['encoder'], *raw['heads']['projection']])
    raw['encoder'] = {f'module.{k}': v for k, v in raw['encoder'].items()}            # as another trainer would save it
    raw['heads']['projection'] = {f'module.{k}': v for k, v in raw['heads']['projection'].items()}
    torch.save(raw, tmp_path/'b.pt')
    ck = load_checkpoint(tmp_path/'b.pt')
    assert not any(k.startswith('module.') for k in ck['heads']['projection'])
    x = _cycles()
    with torch.no_grad():
        torch.testing.assert_close(load_encoder_only(tmp_path/'b.pt').eval()(x)[1], enc(x)[1])
        into = DDP.__new__(DDP)                                                         # no process group needed to load into .module
        nn.Module.__init__(into); into.module = build_encoder(enc.config)
        load_encoder_only(tmp_path/'b.pt', into)
        torch.testing.assert_close(into.module.eval()(x)[1], enc(x)[1])

def test_bidirectional_gradients():
    "Every parameter of the bidirectional encoder and its heads learns, and the first frame hears the last sample."
    torch.manual_seed(0)
    enc = build_encoder(TINY)
    proj = ProjectionHead(enc.out_dim, 32, 8)
    x = _cycles(4, 200).requires_grad_(True)
    frames, pooled = enc(x)
    bounds = torch.tensor([[0, 20, 70, 95, 200], [0, 25, 80, 100, 180], [0, 10, 60, 90, 150], [0, 30, 90, 110, 200]])
    sub = pool_substructures(frames, bounds, 200)
    (proj(pooled).square().mean() + proj(sub).square().mean()).backward()
    dead = [n for n, p in [*enc.named_parameters(), *proj.named_parameters()] if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []
    causal = build_encoder({**TINY, 'mamba_bidirectional': False})
    assert sum(p.numel() for p in enc.parameters()) > sum(p.numel() for p in causal.parameters())
    x.grad = None
    enc.eval(); causal.eval()                                   # in training mode BatchNorm's batch statistics mix all samples
    w = torch.randn(16)                                         # (a plain sum of LayerNorm outputs would be constant)
    g, = torch.autograd.grad((enc(x)[0][:, 0] * w).sum(), x)
    assert g[:, -8:].abs().sum() > 0                                                  # the scan right-to-left reaches frame 0
    g, = torch.autograd.grad((causal(x)[0][:, 0] * w).sum(), x)
    assert g[:, :8].abs().sum() > 0
    assert g[:, -8:].abs().sum() == 0

def test_pooling_matches_loop_at_real_size():
    torch.manual_seed(1)
    n_samples, n_frames = 4000, 250
    frames = torch.randn(32, n_frames, 24)
    lengths = torch.randint(1500, 4001, (32,))
    inner = torch.sort(torch.rand(32, 3), dim=1).values * lengths[:, None].float()
    bounds = torch.cat([torch.zeros(32, 1, dtype=torch.long), inner.long(), lengths[:, None]], 1)
    got = pool_substructures(frames, bounds, n_samples)
    for b in range(32):
        f = [int(o) * n_frames // n_samples for o in bounds[b]]
        for k in range(4):
            s = min(f[k], n_frames - 1); e = min(max(f[k + 1], s + 1), n_frames)
            torch.testing.assert_close(got[b, k], frames[b, s:e].mean(0))

def test_presets_against_packaged_configs():
    for kind in ('finetune', 'pretrain'):
        cfg = load_config(kind)
        assert resolve_model_config(cfg['model']) == cfg['model']
        for name in MODEL_PRESETS:
            m = apply_preset(cfg, name)['model']
            enc = build_encoder(m)
            assert enc.n_frames(cfg['data']['target_length']) == cfg['data']['target_length'] // enc.total_stride
    with pytest.raises(ValueError, match='choose one of default, cpu'): apply_preset(load_config(), 'huge')

def test_pahcl_config_shows_model_keys(pahcl):
    import json
    r = pahcl('config', '--task', 'pascal', '--set', 'model.mamba_bidirectional=false', '--set', 'model.mamba_d_state=8', '--json')
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)['model']
    assert (m['mamba_bidirectional'], m['mamba_d_state'], m['scan_impl']) == (False, 8, 'auto')
    assert build_encoder(m).config['mamba_d_state'] == 8

def test_mambapy_layers_through_layer_factory():
    "The benchmark's use: mambapy's residual Mamba layers inside the same encoder."
    mp = pytest.importorskip('mambapy.mamba')
    def factory(d):
        return mp.ResidualBlock(mp.MambaConfig(d_model=d, n_layers=1, d_state=4, pscan=True))
    enc = build_encoder(TINY, layer_factory=factory)
    assert all(isinstance(l, mp.ResidualBlock) for l in enc.layers) and len(enc.layers) == TINY['mamba_n_layers']
    frames, pooled = enc(_cycles())
    assert frames.shape == (3, enc.n_frames(160), 16) and torch.isfinite(frames).all()
