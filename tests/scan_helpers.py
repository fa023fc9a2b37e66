"""Seeded inputs for the selective scan and a comparison of two functions' outputs and input gradients, shared by the
scan's tests."""
import math
import torch

def scan_inputs(batch=2, d_inner=5, d_state=3, L=11, dtype=torch.float64, seed=0, requires_grad=True):
    "Random, seeded scan inputs (u, delta, A, B, C, D, z, delta_bias) of the given sizes."
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    xs = [r(batch, d_inner, L), r(batch, d_inner, L) * 0.5 - 1.0,
          -torch.rand(d_inner, d_state, generator=g, dtype=dtype) * d_state - 0.5,
          r(batch, d_state, L), r(batch, d_state, L), r(d_inner), r(batch, d_inner, L), r(d_inner) * 0.1]
    return [x.requires_grad_(requires_grad) for x in xs]

def max_grad_diff(f1, f2, xs, seed=0):
    "Largest absolute difference between the outputs, and between the input gradients, of `f1(*xs)` and `f2(*xs)`."
    y1, y2 = f1(*xs), f2(*xs)
    dy = torch.randn(y1.shape, generator=torch.Generator().manual_seed(seed), dtype=y1.dtype)
    need = [x for x in xs if x.requires_grad]
    g1, g2 = (torch.autograd.grad(y, need, dy, allow_unused=True) for y in (y1, y2))
    if any((a is None) != (b is None) for a, b in zip(g1, g2)): return (y1 - y2).abs().max().item(), math.inf
    return (y1 - y2).abs().max().item(), max((a - b).abs().max().item() for a, b in zip(g1, g2) if a is not None)
