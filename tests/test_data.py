"""pahcl.data across modules and processes: views in DataLoader workers, shards under torch.distributed,
both cycle modes of preprocessing, and the pretraining split without downstream val/test subjects."""
import os, socket, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as tmp
from pahcl.config import default_config
from pahcl.demo_data import make_circor
from pahcl.preprocess import preprocess
from pahcl.tasks import prepare
from pahcl.data import (CycleDataset, ContrastiveCollate, DataError, cycle_bounds, make_loader, read_processed, read_split,
                        set_epoch, subject_split, task_subjects)

AUG = default_config('pretrain')['augmentation']


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    "A tiny CirCor, preprocessed (pad mode) and prepared."
    root = tmp_path_factory.mktemp('demo')
    make_circor(root/'raw'/'circor', n_patients=(4, 3, 3), seconds=(4, 5), seed=3)
    preprocess(root/'raw', root/'processed', num_workers=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        prepare('circor', root/'raw', root/'processed', root/'downstream', seed=42)
    return root


def _same_cycle_dataset(demo, n=8):
    "n copies of one cycle: any difference between views comes from the augmentation's random draws."
    df = read_processed(demo/'processed')
    return CycleDataset(pd.concat([df.iloc[:1]]*n, ignore_index=True), 4000)


def _epochs(ds, seed=42, num_workers=2, epochs=(0, 1), call_set_epoch=True):
    loader = make_loader(ds, 2, shuffle=False, seed=seed, num_workers=num_workers, collate_fn=ContrastiveCollate(AUG, seed=seed))
    out = []
    for e in epochs:
        if call_set_epoch: set_epoch(loader, e)
        out.append([b['view1'] for b in loader])
    return out


def test_workers_draw_different_views(demo):
    ds = _same_cycle_dataset(demo)
    (ep,) = _epochs(ds, epochs=(0,))
    # batches 0 and 1 go to workers 0 and 1, each worker's first call: same items, same counter
    assert not torch.equal(ep[0], ep[1])
    assert len({tuple(v.flatten()[:50].tolist()) for b in ep for v in b}) == 8   # every view of the one cycle is new


@pytest.mark.parametrize('call_set_epoch', [True, False])
def test_epochs_differ_and_runs_repeat_with_workers(demo, call_set_epoch):
    ds = _same_cycle_dataset(demo)
    a = _epochs(ds, call_set_epoch=call_set_epoch)
    b = _epochs(ds, call_set_epoch=call_set_epoch)
    for x, y in zip(a[0], a[1]): assert not torch.equal(x, y)           # two epochs: different views
    for e in (0, 1):
        for x, y in zip(a[e], b[e]): assert torch.equal(x, y)           # same seed: the same run
    c = _epochs(ds, seed=7, call_set_epoch=call_set_epoch)
    assert not torch.equal(a[0][0], c[0][0])


def test_resumed_epoch_matches_with_workers(demo):
    ds = _same_cycle_dataset(demo)
    full = _epochs(ds, epochs=(0, 1, 2))
    resumed = _epochs(ds, epochs=(2,))
    for x, y in zip(full[2], resumed[0]): assert torch.equal(x, y)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _ddp_worker(rank, world, port, n, out_dir):
    import torch.distributed as dist
    from pahcl.data import make_loader, set_epoch
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    try:
        ds = torch.utils.data.TensorDataset(torch.arange(n))
        loader = make_loader(ds, 3, shuffle=True, seed=42, collate_fn=lambda items: torch.stack([i[0] for i in items]))
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        seen = []
        for epoch in (0, 1):
            set_epoch(loader, epoch)
            seen.append(torch.cat(list(loader)).tolist())
        torch.save(seen, Path(out_dir)/f'rank{rank}.pt')
    finally:
        dist.destroy_process_group()


def test_distributed_shards_are_disjoint_and_cover(tmp_path):
    n, world = 20, 2
    # fork: the children inherit the imported modules (CPU and gloo only, so forking is safe) instead of importing again
    tmp.start_processes(_ddp_worker, args=(world, _free_port(), n, str(tmp_path)), nprocs=world, join=True, start_method='fork')
    seen = [torch.load(tmp_path/f'rank{r}.pt') for r in range(world)]
    for epoch in (0, 1):
        shards = [set(seen[r][epoch]) for r in range(world)]
        assert not shards[0] & shards[1]
        assert shards[0] | shards[1] == set(range(n))
        assert len(seen[0][epoch]) == len(seen[1][epoch]) == n//world
    assert seen[0][0] != seen[0][1]                                     # set_epoch reshuffles


def test_fake_ranks_with_explicit_replicas():
    for n in (10, 11):
        shards = [list(torch.utils.data.DistributedSampler(range(n), num_replicas=2, rank=r, shuffle=True, seed=3, drop_last=True))
                  for r in (0, 1)]
        assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == len(shards[1]) == n//2


def test_resample_mode_bounds(demo, tmp_path):
    "cycle_mode resample: offsets are stored already stretched, and the cycle fills the array."
    cfg = default_config('preprocess'); cfg['cycles']['cycle_mode'] = 'resample'; cfg['cycles']['target_length'] = 3000
    preprocess(demo/'raw', tmp_path/'processed', cfg=cfg, num_workers=1, progress=False)
    rs, pad = read_processed(tmp_path/'processed'), read_processed(demo/'processed')
    assert set(rs.cycle_mode) == {'resample'} and set(rs.stored_length) == {3000}
    b, ok = cycle_bounds(rs, 3000)
    assert ok.all() and (b[:, 4] == 3000).all() and (np.diff(b, axis=1) > 0).all()
    assert (b[:, :4] == rs[['s1_start', 'systole_start', 's2_start', 'diastole_start']].to_numpy()).all()
    # the same cycles in pad mode: the offsets are the resampled ones times length/3000
    key = ['recording', 'cycle']
    m = rs.merge(pad, on=key, suffixes=('_r', '_p'))
    assert len(m) > 10
    np.testing.assert_allclose(m.s2_start_r*m.length_p/3000, m.s2_start_p, atol=2)
    x = CycleDataset(rs, 3000)[0]['x'][0]
    assert x[-50:].abs().sum() > 0                                      # stretched: no zero padding at the end
    # a task built from resampled cycles carries the mode through read_split
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        prepare('circor', demo/'raw', tmp_path/'processed', tmp_path/'downstream')
    tr, _ = read_split(tmp_path/'downstream'/'circor_murmur', 'train')
    assert set(tr.cycle_mode) == {'resample'}
    assert (CycleDataset(tr, 3000).bounds[:, 4] == 3000).all()


def test_pretraining_split_leaves_out_task_subjects(demo):
    df = read_processed(demo/'processed')
    held = task_subjects(demo/'downstream'/'circor_murmur')
    train, val = subject_split(df, 0.25, seed=1, exclude=held)
    for part in (train, val):
        assert not set(zip(part.dataset, part.subject)) & held
    assert not set(train.subject) & set(val.subject)
    assert len(train) + len(val) == sum((d, s) not in held for d, s in zip(df.dataset, df.subject))
    # the task's own train subjects can be pretrained on
    tr, _ = read_split(demo/'downstream'/'circor_murmur', 'train')
    assert set(tr.subject) <= set(train.subject) | set(val.subject)


def test_missing_things_say_what_to_run(tmp_path):
    with pytest.raises(DataError, match='pahcl preprocess'): read_processed(tmp_path)
    with pytest.raises(DataError, match='pahcl prepare'): task_subjects(tmp_path)
    with pytest.raises(DataError, match='pahcl prepare'): read_split(tmp_path, 'train')
