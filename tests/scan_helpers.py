"""Seeded inputs for the selective scan (`pahcl.ssm.scan_inputs`) and a comparison of two functions' outputs and input gradients, shared by the
scan's tests."""
import math
import torch
from pahcl.ssm import scan_inputs  # noqa: F401  (re-exported: seeded scan inputs, shared with the benchmarks)

def max_grad_diff(f1, f2, xs, seed=0):
    "Largest absolute difference between the outputs, and between the input gradients, of `f1(*xs)` and `f2(*xs)`."
    y1, y2 = f1(*xs), f2(*xs)
    dy = torch.randn(y1.shape, generator=torch.Generator().manual_seed(seed), dtype=y1.dtype)
    need = [x for x in xs if x.requires_grad]
    g1, g2 = (torch.autograd.grad(y, need, dy, allow_unused=True) for y in (y1, y2))
    if any((a is None) != (b is None) for a, b in zip(g1, g2)): return (y1 - y2).abs().max().item(), math.inf
    return (y1 - y2).abs().max().item(), max((a - b).abs().max().item() for a, b in zip(g1, g2) if a is not None)
