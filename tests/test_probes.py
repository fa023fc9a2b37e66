"""The classical baseline's features on real CirCor recordings (skipped when ../shared/data is absent)."""
import numpy as np
import pandas as pd
import pytest
from pahcl.probes import SUBSTRUCTURE_FEATURES, classical_features

@pytest.fixture
def circor(shared_data):
    d = shared_data/'circor2022'
    if not (d/'training_data').is_dir(): pytest.skip('CirCor recordings not found')
    return d

def test_substructure_features_of_20_circor_recordings(circor):
    "The first recording (name order) of the first 10 murmur-Present and the first 10 murmur-Absent patients."
    meta = pd.read_csv(circor/'training_data.csv')
    rec = {}
    for m in ('Present', 'Absent'):
        for pid in sorted(meta.loc[meta.Murmur == m, 'Patient ID'])[:10]:
            rec[(m, pid)] = sorted((circor/'training_data').glob(f'{pid}_*.wav'))[0]
    f = classical_features(rec, workers=1, substructure=True)
    assert sorted(f) == sorted(rec)
    S = np.stack([f[k][174:] for k in rec]); present = np.array([k[0] == 'Present' for k in rec])
    assert S.shape == (20, len(SUBSTRUCTURE_FEATURES))
    finite = np.isfinite(S).all(1)
    print('segmented completely:', finite.sum(), 'of 20')
    assert finite.sum() >= 16                      # measured: all 20
    col = lambda n: S[:, SUBSTRUCTURE_FEATURES.index(n)]
    for n in ('systole_to_s1_log_power', 'systole_to_sounds_log_power_100_200hz'):
        p, a = np.nanmean(col(n)[present]), np.nanmean(col(n)[~present])
        print(f'{n}: murmur Present {p:.3f}, Absent {a:.3f}')
    # measured: systole/S1 -1.046 (Present) vs -1.541 (Absent); systole/sounds at 100-200 Hz -0.756 vs -1.557.
    # On 193 recordings of 60 patients the gaps are 0.43 and 0.82: a murmur fills systole.
    assert np.nanmean(col('systole_to_s1_log_power')[present]) > np.nanmean(col('systole_to_s1_log_power')[~present]) + 0.25
    assert (np.nanmean(col('systole_to_sounds_log_power_100_200hz')[present])
            > np.nanmean(col('systole_to_sounds_log_power_100_200hz')[~present]) + 0.4)
    # the durations are a heart's: S1 and S2 about 0.1 s, a cycle between 0.3 s (200 bpm) and 1.5 s (40 bpm)
    assert 0.05 < np.nanmedian(col('s1_duration_mean')) < 0.2 and 0.05 < np.nanmedian(col('s2_duration_mean')) < 0.2
    assert 0.3 < np.nanmedian(col('cycle_duration_mean')) < 1.5
