"""The scan kernel's build, cache and signatures beyond the notebook's cell tests: a fresh build into an empty cache and
its reuse (in subprocesses, so the environment is the one a user would have), the signatures against the C++ source,
and the C++ timing harness of tools/."""
import json, os, subprocess, sys
import pytest
from pahcl.kernel import SIGNATURES, argtypes, load_scan_kernel, signature_drift

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _run(code, **env):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})

def test_signatures_match_cpp():
    "Every entry point's named signature has the C++ declaration's parameters: names, kinds, order."
    assert signature_drift() == []

def test_loaded_argtypes():
    lib = load_scan_kernel()
    if lib is None: pytest.skip('no C++ compiler here')
    for name, sig in SIGNATURES.items():
        for s in ('f32', 'f64'): assert getattr(lib, f'{name}_{s}').argtypes == argtypes(sig)

def test_kernel_builds_into_cache(tmp_path):
    if load_scan_kernel() is None: pytest.skip('no C++ compiler here')
    code = ("from pahcl.kernel import load_scan_kernel; from pahcl.ssm import resolve_scan_impl; "
            "assert load_scan_kernel(verbose=True) is not None; print(resolve_scan_impl())")
    r = _run(code, PAHCL_CACHE_DIR=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert 'built' in r.stdout and r.stdout.strip().endswith('cpp')
    built = sorted(p.name for p in (tmp_path/'kernels').iterdir())
    assert len(built) == 1 and built[0].startswith('selective_scan_') and built[0].endswith('.so')   # no .part left
    r = _run(code, PAHCL_CACHE_DIR=str(tmp_path))                              # second time: loaded, not built
    assert r.returncode == 0 and 'built' not in r.stdout and r.stdout.strip() == 'cpp'

@pytest.mark.skipif(load_scan_kernel() is None, reason='no C++ compiler')
def test_scan_harness_runs():
    "tools/scan_harness.py builds the kernel into a C++ program and prints its times as the last line's JSON."
    from pahcl.ssm import SCAN_CHUNK
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'scan_harness.py'), '--rows', '2', '--tokens', '40',
                        '--channels', '64', '--rounds', '1'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res['forward_ms'] > 0 and res['backward_ms'] > 0 and res['chunk'] == SCAN_CHUNK
    assert res['checksum'] == res['checksum']                     # not NaN: the scan ran on finite numbers
