"""Selective scan and Mamba block beyond the notebook's cell tests: more shapes and thread splits, the
fallbacks without a kernel (in subprocesses, so the environment is the one a user would have),
half precision, forked workers, and parity with mambapy's parallel scan when mambapy is installed."""
import multiprocessing as mp
import os, subprocess, sys
import pytest
import torch
import torch.nn.functional as F
from pahcl.kernel import load_scan_kernel
from pahcl.ssm import MambaBlock, SCAN_CHUNK, resolve_scan_impl, selective_scan, selective_scan_ref
from scan_helpers import max_grad_diff as _max_grad_diff, scan_inputs as _scan_inputs

FAST = ['torch'] + (['cpp'] if load_scan_kernel() is not None else [])

@pytest.mark.parametrize('impl', FAST)
@pytest.mark.parametrize('batch,d_inner,d_state,L', [(1, 13, 16, 2*SCAN_CHUNK + 3), (3, 7, 5, SCAN_CHUNK),
                                                      (2, 4, 1, 1), (4, 9, 16, 3*SCAN_CHUNK - 1)])
def test_parity_float64(impl, batch, d_inner, d_state, L):
    xs = _scan_inputs(batch, d_inner, d_state, L, seed=batch*1000 + L)
    out, grad = _max_grad_diff(lambda *a: selective_scan(*a, impl=impl), selective_scan_ref, xs)
    assert out < 1e-10 and grad < 1e-10, (out, grad)

@pytest.mark.parametrize('impl', FAST)
@pytest.mark.parametrize('threads', [1, 3, 8])
def test_thread_splits(impl, threads):
    "The work split (batch rows × channel groups, over threads) must not change the result."
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        xs = _scan_inputs(2, 11, 4, 21, seed=threads)
        out, grad = _max_grad_diff(lambda *a: selective_scan(*a, impl=impl), selective_scan_ref, xs)
    finally: torch.set_num_threads(old)
    assert out < 1e-10 and grad < 1e-10

@pytest.mark.parametrize('impl', FAST)
def test_float32_and_bfloat16(impl):
    xs = _scan_inputs(2, 16, 16, 70, dtype=torch.float32, seed=3)
    out, grad = _max_grad_diff(lambda *a: selective_scan(*a, impl=impl), selective_scan_ref, xs)
    assert out < 1e-4 and grad < 1e-3
    xb = [x.detach().bfloat16() for x in xs]
    y = selective_scan(*xb, impl=impl)
    assert y.dtype == torch.bfloat16
    ref = selective_scan_ref(*[x.float() for x in xb])
    assert (y.float() - ref).abs().max() < 0.05 * ref.abs().max()

def test_block_impls_agree():
    torch.manual_seed(0)
    blk = MambaBlock(12, d_state=8, bidirectional=True).double()
    x = torch.randn(2, 37, 12, dtype=torch.float64)
    outs, grads = [], []
    for impl in ['ref'] + FAST:
        blk.scan_impl = impl; blk.zero_grad()
        y = blk(x); y.square().sum().backward()
        outs.append(y.detach()); grads.append(torch.cat([p.grad.flatten() for p in blk.parameters()]))
    for y, g in zip(outs[1:], grads[1:]):
        assert (y - outs[0]).abs().max() < 1e-10 and (g - grads[0]).abs().max() < 1e-9

def test_unknown_impl():
    with pytest.raises(ValueError, match='unknown scan_impl'): MambaBlock(8, scan_impl='fast')

def _run(code, **env):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})

@pytest.mark.parametrize('env,warns', [(dict(PAHCL_SSM_KERNEL='0'), False), (dict(CXX='/nonexistent/g++'), False),
                                       (dict(CXX='false'), True)])
def test_fallback_without_kernel(tmp_path, env, warns):
    "No kernel (switched off, no compiler, a compiler that fails): the PyTorch scan, with a warning only for the last."
    code = ("import warnings, torch; warnings.simplefilter('always')\n"
            f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
            "from pahcl.ssm import resolve_scan_impl, selective_scan, selective_scan_ref\n"
            "from scan_helpers import scan_inputs as _scan_inputs\n"
            "print(resolve_scan_impl())\n"
            "xs = _scan_inputs(requires_grad=False)\n"
            "assert (selective_scan(*xs) - selective_scan_ref(*xs)).abs().max() < 1e-12\n")
    r = _run(code, PAHCL_CACHE_DIR=str(tmp_path), **env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == 'torch'
    assert ('could not build the C++ selective-scan kernel' in r.stderr) == warns, r.stderr

def _child(q):
    xs = _scan_inputs(3, 8, 4, 19, requires_grad=False)
    q.put(float((selective_scan(*xs) - selective_scan_ref(*xs)).abs().max()))

def test_scan_in_forked_worker():
    "A DataLoader worker forks after the parent has used the kernel's thread pool; the child must still scan."
    if 'fork' not in mp.get_all_start_methods(): pytest.skip('no fork on this platform')
    xs = _scan_inputs(3, 8, 4, 19, requires_grad=False)
    selective_scan(*xs)                                                        # parent starts its pool
    ctx = mp.get_context('fork'); q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,)); p.start()
    try: assert q.get(timeout=120) < 1e-12
    finally: p.join(timeout=60)
    assert p.exitcode == 0

def test_matches_mambapy():
    "Our scan against mambapy's pscan-based selective scan, on the same inputs (mambapy takes Δ after softplus)."
    mb = pytest.importorskip('mambapy.mamba')
    xs = _scan_inputs(2, 32, 16, 50, dtype=torch.float32, seed=7)
    u, delta, A, B, C, D, z, bias = xs
    dt = F.softplus(delta + bias[:, None])
    theirs = mb.MambaBlock.selective_scan(None, u.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2),
                                          C.transpose(1, 2), D).transpose(1, 2)
    dy = torch.randn_like(theirs)
    g_theirs = torch.autograd.grad(theirs, xs[:6], dy, allow_unused=True)
    for impl in FAST:
        ours = selective_scan(u, delta, A, B, C, D, delta_bias=bias, impl=impl)
        assert (ours - theirs).abs().max() < 1e-4 * max(1.0, theirs.abs().max().item())
        g_ours = torch.autograd.grad(ours, xs[:6], dy, allow_unused=True)
        for a, b in zip(g_ours, g_theirs):
            assert (a - b).abs().max() < 1e-3 * max(1.0, b.abs().max().item())
