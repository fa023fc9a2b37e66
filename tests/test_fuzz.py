"""Fuzzing the signal chain with hypothesis: signals of any length (0 to 3 s), any amplitude
(1e-300 to 1e300), NaN, inf and DC offsets through resampling, filtering, envelopes, heart-rate estimation,
segmentation and cycle cutting. The only exceptions allowed are the project's own (`SignalError`, of which
`SegmentError` is a kind), each with a message; every example must finish within the deadline; and what
the pipeline-level functions return is finite. Derandomized, so CI sees the same examples every run."""
import warnings
from datetime import timedelta
import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck, strategies as st
from pahcl import signal as S
from pahcl.signal import SignalError
from pahcl.segment import SegmentError, segment, recording_cycles, load_segmenter_params

FUZZ = settings(derandomize=True, max_examples=50, deadline=timedelta(seconds=20), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PARAMS = load_segmenter_params()

@st.composite
def recordings(draw, rates=(1000, 2000, 4000, 5000, 8000), max_seconds=3.0):
    "(signal, sample rate): noise, a toy heart sound, silence or a constant, at any scale, with DC, NaN and inf sprinkled in."
    sr = draw(st.sampled_from(rates))
    seconds = draw(st.sampled_from(['tiny', 'short', 'long', 'long', 'long']))         # mostly long enough to reach segmentation
    n = draw(st.integers(0, 8) if seconds == 'tiny' else st.integers(9, int(0.7*sr)) if seconds == 'short'
             else st.integers(int(0.7*sr), int(max_seconds*sr)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(['noise', 'beats', 'beats', 'beats', 'zeros', 'constant', 'spiky']))
    t = np.arange(n)/sr
    x = {'noise': rng.standard_normal(n), 'zeros': np.zeros(n), 'constant': np.ones(n),
         'beats': np.sin(2*np.pi*50*t)*(np.mod(t, 0.8) < 0.1) + 0.7*np.sin(2*np.pi*80*t)*(np.abs(np.mod(t, 0.8) - 0.35) < 0.04)
                  + 0.02*rng.standard_normal(n),
         'spiky': 0.01*rng.standard_normal(n) + 100*(rng.uniform(size=n) < 0.001)}[kind]
    amp = 10.0**draw(st.one_of(st.just(0.0), st.floats(-6, 6), st.floats(-300, 300)))
    x = amp*(x + draw(st.sampled_from([0.0, 0.0, 0.5, -1e3])))                        # DC, relative to the signal ...
    x = x + draw(st.sampled_from([0.0, 0.0, 0.0, 1.0]))                               # ... or absolute
    bad = draw(st.sampled_from([None]*9 + [np.nan, np.inf, -np.inf]))
    if n and bad is not None: x[rng.integers(0, n, draw(st.integers(1, 3)))] = bad
    return x, sr

def only_our_errors(f, *a, **kw):
    "Run `f`; a `SignalError` with a message is fine, any other exception fails the test."
    with warnings.catch_warnings(), np.errstate(all='ignore'):
        warnings.simplefilter('ignore')
        try: return f(*a, **kw)
        except SignalError as e:
            assert str(e), f'{type(e).__name__} without a message'
            return None

def finite(*arrays):
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind == 'f': assert np.isfinite(a).all(), 'non-finite output'

@FUZZ
@given(recordings(), st.sampled_from([1000, 2000, 5000]))
def test_resample_and_filters(rec, sr_out):
    x, sr = rec
    y = only_our_errors(S.resample, x, sr, sr_out)
    if y is not None: assert abs(y.size - x.size*sr_out/sr) <= 1
    y = only_our_errors(S.bandpass, x, sr)
    if y is not None: assert y.shape == x.shape
    only_our_errors(S.remove_spikes, x, sr)
    for mode in ('zscore', 'peak', 'none'): only_our_errors(S.normalize, x, mode)
    y = only_our_errors(S.preprocess_signal, x, sr)
    if y is not None: finite(y)

@FUZZ
@given(recordings(rates=(5000,)))
def test_envelopes(rec):
    x, sr = rec
    only_our_errors(S.hilbert_envelope, x)
    only_our_errors(S.homomorphic_envelope, x, sr)
    only_our_errors(S.wavelet_envelope, x, sr)
    only_our_errors(S.psd_envelope, x, sr)
    F = only_our_errors(S.envelope_features, x, sr)
    if F is not None:
        finite(F); assert F.shape == (int(np.floor(x.size/sr*50)), 4)
        hr = only_our_errors(S.estimate_heart_rate, F[:, 0])
        if hr is not None: assert 40 <= hr[0] <= 200 and 0 < hr[1] < 60/hr[0]

@FUZZ
@given(recordings(rates=(5000,)))
def test_segment(rec):
    x, sr = rec
    s = only_our_errors(segment, x, sr, PARAMS)
    if s is not None:
        assert s.states.shape == x.shape and set(np.unique(s.states)) <= {0, 1, 2, 3, 4}
        finite([s.heart_rate])

@FUZZ
@given(recordings())
def test_recording_cycles(rec):
    x, sr = rec
    out = only_our_errors(recording_cycles, x, sr, None, PARAMS)
    if out is not None:
        cycles, rows, dropped, seg = out
        finite(cycles); assert len(cycles) == len(rows) >= 2

def test_errors_are_ours():
    "The project's error classes: a SegmentError is a SignalError, which is a ValueError the CLI prints as one line."
    assert issubclass(SegmentError, SignalError) and issubclass(SignalError, ValueError)
