"""The synthetic demo datasets: real on-disk layouts, seeded bytes, and labels a simple model can learn."""
import hashlib, re
from pathlib import Path
import numpy as np, pandas as pd, pytest, soundfile as sf, wfdb
from scipy import signal as sps
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from pahcl.demo_data import make_demo_datasets, make_circor, CIRCOR_COLUMNS, DEMO_MARKER

SHARED = Path(__file__).resolve().parents[1].parent/'shared'/'data'

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo')
    return out, make_demo_datasets(out, seed=0, scale='small')

def shape(text:str, *names) -> str:
    "A file's text with its record names and numbers blanked, to compare the format of two files."
    for n in names: text = text.replace(n, 'R')
    return re.sub(r'\d+(\.\d+)?', 'N', text)

# ---------------------------------------------------------------- layouts

def test_counts_and_class_balance(demo):
    out, c = demo
    assert set(c) == {'circor', 'physionet2016', 'pascal'}
    assert c['circor']['murmur'] == {'Absent': 14, 'Present': 14, 'Unknown': 8}
    for task, n in [('murmur', 3), ('outcome', 2)]:               # every class has enough patients for a 70/15/15 split
        assert len(c['circor'][task]) == n and min(c['circor'][task].values()) >= 7, c['circor'][task]
    assert min(c['physionet2016']['normal'], c['physionet2016']['abnormal']) >= 7
    assert sum(1 for _ in (out/'physionet2016').rglob('*.wav')) == c['physionet2016']['recordings'] == 40
    assert sum(1 for _ in (out/'circor'/'training_data').glob('*.wav')) == c['circor']['recordings']
    assert sum(1 for _ in (out/'pascal'/'set_b').glob('*.wav')) == c['pascal']['files']
    for d in ('circor', 'physionet2016', 'pascal'): assert (out/d/DEMO_MARKER).is_file()

def test_circor_layout(demo):
    out, _ = demo
    root = out/'circor'
    csv = pd.read_csv(root/'training_data.csv')
    assert list(csv.columns) == CIRCOR_COLUMNS
    assert csv['Patient ID'].dtype.kind == 'i' and csv['Pregnancy status'].dtype == bool
    assert set(csv.Murmur) == {'Present', 'Absent', 'Unknown'} and set(csv.Outcome) == {'Normal', 'Abnormal'}
    assert set(csv.Age.dropna()) <= {'Neonate', 'Infant', 'Child', 'Adolescent', 'Young Adult'}
    assert csv[csv.Murmur != 'Present']['Murmur locations'].isna().all()
    records = (root/'RECORDS').read_text().split()
    sums = dict(reversed(l.split(' ', 1)) for l in (root/'SHA256SUMS.txt').read_text().splitlines())
    assert len(sums) == 3*len(records) + len(csv)
    for row in csv.itertuples():
        pid, sites = row[1], row[2].split('+')
        txt = (root/'training_data'/f'{pid}.txt').read_bytes().decode()
        assert not txt.endswith('\n') and '\r\n' in txt
        lines = txt.split('\r\n')
        assert lines[0] == f'{pid} {len(sites)} 4000'
        assert [l.split()[0] for l in lines[1:1 + len(sites)]] == sites
        if row.Murmur == 'Present':
            assert set(row[9].split('+')) <= set(sites) and row[10] in row[9].split('+')
        for l in lines[1:1 + len(sites)]:
            site, hea, wav, tsv = l.split()
            name = hea[:-4]
            assert f'training_data/{name}' in records
            h = wfdb.rdheader(str(root/'training_data'/name))
            x, sr = sf.read(root/'training_data'/wav, dtype='int16')
            assert (h.fs, h.sig_len, h.sig_name, h.file_name) == (4000, len(x), [site], [wav]) and sr == 4000
            assert sf.info(root/'training_data'/wav).subtype == 'PCM_16'
            seg = pd.read_csv(root/'training_data'/tsv, sep='\t', header=None, names=['start', 'end', 'state'])
            assert set(seg.state) <= {0, 1, 2, 3, 4} and {1, 2, 3, 4} <= set(seg.state)
            assert seg.start.iloc[0] == 0 and abs(seg.end.iloc[-1] - len(x)/4000) < 1e-6
            assert np.allclose(seg.start.values[1:], seg.end.values[:-1])
            ann = seg[seg.state > 0].state.values                   # S1 -> systole -> S2 -> diastole -> S1
            assert all(b == a % 4 + 1 for a, b in zip(ann, ann[1:]) if b != 1 or a == 4)
            for f in (hea, wav, tsv): assert hashlib.sha256((root/'training_data'/f).read_bytes()).hexdigest() == sums[f'training_data/{f}']

def test_circor_matches_real_files(demo):
    real = SHARED/'circor2022'
    if not real.is_dir(): pytest.skip(f'real CirCor not found at {real}')
    out, _ = demo
    ours, theirs = pd.read_csv(out/'circor'/'training_data.csv'), pd.read_csv(real/'training_data.csv')
    assert list(ours.columns) == list(theirs.columns)
    for col in ['Patient ID', 'Height', 'Weight', 'Pregnancy status']: assert ours[col].dtype == theirs[col].dtype, col
    rhead = (real/'training_data.csv').read_text().splitlines()[1]
    ohead = (out/'circor'/'training_data.csv').read_text().splitlines()
    assert ',nan,' in rhead and any(',nan,' in l for l in ohead)            # NaN written as the text nan in both
    keys = lambda t: [l.split(':')[0] for l in t.split('\r\n') if l.startswith('#')]
    rtxt = (real/'training_data'/'31737.txt').read_bytes().decode()
    otxt = next((out/'circor'/'training_data').glob('*.txt')).read_bytes().decode()
    assert keys(otxt) == keys(rtxt)                                           # the same fields, in the same order
    assert shape(otxt.split('\r\n')[0]) == shape(rtxt.split('\r\n')[0]) and not otxt.endswith('\n') and not rtxt.endswith('\n')
    rhea = (real/'training_data'/'31737_AV.hea').read_bytes().decode()
    ohea = next((out/'circor'/'training_data').glob('*_AV.hea'))
    assert shape(ohea.read_bytes().decode(), ohea.stem) == shape(rhea, '31737_AV')
    rtsv = (real/'training_data'/'31737_AV.tsv').read_bytes().decode()
    otsv = next((out/'circor'/'training_data').glob('*.tsv')).read_bytes().decode()
    assert {shape(l) for l in otsv.splitlines(True)} == {shape(l) for l in rtsv.splitlines(True)}
    assert (real/'RECORDS').read_text().splitlines()[0].startswith('training_data/')

def test_physionet_layout(demo):
    out, _ = demo
    for db in ('training-a', 'training-b'):
        root = out/'physionet2016'/db
        ref = pd.read_csv(root/'REFERENCE.csv', header=None, names=['record', 'label'])
        assert set(ref.label) == {-1, 1} and ref.record.str.match(rf'^{db[-1]}\d{{4}}$').all()
        assert (root/'RECORDS').read_text().split() == list(ref.record)
        assert (root/'RECORDS-abnormal').read_text().split() == list(ref.record[ref.label == 1])
        for r in ref.itertuples():
            h = wfdb.rdheader(str(root/r.record))
            x, sr = sf.read(root/f'{r.record}.wav', dtype='int16')
            assert (h.fs, h.sig_len, h.sig_name, sr) == (2000, len(x), ['PCG'], 2000)
            assert h.comments == ['Normal' if r.label == -1 else 'Abnormal']
        for line in (root/'SHA256SUMS').read_text().splitlines():
            digest, name = line.split('  ')
            assert hashlib.sha256((root/name).read_bytes()).hexdigest() == digest
    assert {sf.info(p).duration for p in (out/'physionet2016'/'training-b').glob('*.wav')} == {8.0}
    real = SHARED/'physionet2016'/'training-b'
    if real.is_dir():
        ours = (out/'physionet2016'/'training-b'/'b0001.hea').read_bytes().decode()
        assert shape(ours, 'b0001').replace('Abnormal', 'Normal') == shape((real/'b0001.hea').read_bytes().decode(), 'b0001')
        assert (real/'REFERENCE.csv').read_bytes()[:8] == b'b0001,-1' or b',' in (real/'REFERENCE.csv').read_bytes()
        real_sums = [l.split('  ')[1] for l in (real/'SHA256SUMS').read_text().splitlines()]
        our_sums = [l.split('  ')[1] for l in (out/'physionet2016'/'training-b'/'SHA256SUMS').read_text().splitlines()]
        assert real_sums[:4] == our_sums[:4] and our_sums == sorted(our_sums)

def pascal_disk_name(fname:str) -> str:
    "Where set_b.csv's `fname` lies on disk in the redistributed copy."
    name = fname.split('/', 1)[1]
    m = re.match(r'Btraining_(\w+?)_Btraining_(noisy\w+?)_(.*)', name)
    if m: return f'{m[1]}_{m[2]}_{m[3]}'
    if name.startswith('Bunlabelledtest_'): return 'Bunlabelledtest__' + name[len('Bunlabelledtest_'):]
    label, rest = re.match(r'Btraining_([a-z]+)_(.*)', name).groups()
    return f'{label}__{rest}'

def test_pascal_layout(demo):
    out, c = demo
    root = out/'pascal'
    raw = (root/'set_b.csv').read_bytes()
    assert raw.count(b'\r\n') == raw.count(b'\n') == c['pascal']['files'] + 1          # CRLF, as the real file
    csv = pd.read_csv(root/'set_b.csv')
    assert list(csv.columns) == ['dataset', 'fname', 'label', 'sublabel'] and set(csv.dataset) == {'b'}
    assert set(csv.label.dropna()) == {'normal', 'murmur', 'extrastole'}
    assert set(csv.sublabel.dropna()) <= {'noisynormal', 'noisymurmur'}
    on_disk = {p.name for p in (root/'set_b').glob('*.wav')}
    mapped = [pascal_disk_name(f) for f in csv.fname]
    assert not any(f.split('/')[1] in on_disk for f in csv.fname)          # the CSV names are never the disk names
    assert sorted(mapped) == sorted(on_disk)
    assert any(n.startswith('normal_noisynormal_') for n in on_disk) and any(n.startswith('Bunlabelledtest__') for n in on_disk)
    for n in on_disk:
        assert re.match(r'^(normal__|murmur__|extrastole__|Bunlabelledtest__|normal_noisynormal_|murmur_noisymurmur_)\d{3}_\d{13}_[A-D]\d?\.wav$', n), n
        i = sf.info(root/'set_b'/n); assert (i.samplerate, i.subtype, i.channels) == (4000, 'PCM_16', 1)
    real = SHARED/'pascal2011'/'set_b.csv'
    if real.is_file():
        theirs = pd.read_csv(real)
        assert list(theirs.columns) == list(csv.columns)
        assert sorted(pascal_disk_name(f) for f in theirs.fname) == sorted(p.name for p in real.parent.joinpath('set_b').glob('*.wav'))

def test_seeded_bytes(demo, tmp_path):
    out, _ = demo
    again = tmp_path/'again'
    make_demo_datasets(again, seed=0, scale='small')
    files = lambda d: {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()}
    a, b = files(out), files(again)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    make_circor(tmp_path/'s1', n_patients=(2, 2, 1), seed=1)
    make_circor(tmp_path/'s0', n_patients=(2, 2, 1), seed=0)
    assert (tmp_path/'s1'/'training_data.csv').read_bytes() != (tmp_path/'s0'/'training_data.csv').read_bytes()

def test_refuses_to_overwrite_real_data(tmp_path):
    (tmp_path/'pascal'/'set_b').mkdir(parents=True)
    (tmp_path/'pascal'/'set_b.csv').write_text('real')
    with pytest.raises(FileExistsError, match='not a pahcl demo dataset'): make_demo_datasets(tmp_path)
    assert (tmp_path/'pascal'/'set_b.csv').read_text() == 'real' and not (tmp_path/'circor').exists()

# ---------------------------------------------------------------- labels a simple model can learn

BANDS = [(25, 50), (50, 100), (100, 150), (150, 250), (250, 400), (400, 600), (600, 900)]

def features(path) -> np.ndarray:
    "Hand-made features of one recording: band powers, envelope floor and contrast, rhythm regularity."
    x, sr = sf.read(path)
    x = x - x.mean()
    f, P = sps.welch(x, sr, nperseg=512)
    tot = P[(f >= 25) & (f < 900)].sum()
    feats = [np.log(P[(f >= a) & (f < b)].sum()/tot + 1e-9) for a, b in BANDS]
    hop = int(0.01*sr)
    def env(lo, hi):
        y = sps.sosfiltfilt(sps.butter(4, [lo, hi], 'bandpass', fs=sr, output='sos'), x)
        e = np.abs(sps.hilbert(y))
        return e[:len(e)//hop*hop].reshape(-1, hop).mean(1)
    lo, hi = env(25, 150), env(150, 600)
    for e in (lo, hi):
        q = np.percentile(e, [10, 25, 50, 90, 99])
        feats += [np.log(q[0]/q[3]), np.log(q[1]/q[3]), np.log(q[2]/q[4]), e.std()/e.mean()]
    feats.append(np.corrcoef(lo, hi)[0, 1])
    z = (lo - lo.mean())/lo.std()
    ac = np.correlate(z, z, 'full')[len(z) - 1:]/len(z)
    lags = np.arange(len(ac))/100
    feats.append(ac[(lags > 0.3) & (lags < 1.6)].max())                       # how regular the rhythm is
    peaks, _ = sps.find_peaks(lo, distance=25, height=np.percentile(lo, 80))
    iv = np.diff(peaks)
    feats += [iv.std()/iv.mean(), iv.max()/np.median(iv)] if len(iv) > 2 else [0.0, 1.0]
    return np.array(feats)

def grouped_cv_score(X, y, groups) -> float:
    "Balanced accuracy of a logistic regression, 5-fold cross-validation grouped by subject."
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, class_weight='balanced', max_iter=2000))
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    return balanced_accuracy_score(y, cross_val_predict(model, X, y, groups=groups, cv=cv))

def test_labels_are_learnable(demo):
    out, _ = demo
    scores = {}
    # CirCor: recordings where the patient's murmur is heard vs recordings of Absent patients
    root = out/'circor'
    csv = pd.read_csv(root/'training_data.csv')
    X, y, g = [], [], []
    for row in csv[csv.Murmur != 'Unknown'].itertuples():
        where = set(str(row[9]).split('+'))
        for l in (root/'training_data'/f'{row[1]}.txt').read_text().splitlines()[1:row[2].count('+') + 2]:
            site, _, wav, _ = l.split()
            if row.Murmur == 'Present' and site not in where: continue
            X.append(features(root/'training_data'/wav)); y.append(row.Murmur == 'Present'); g.append(row[1])
    scores['circor_murmur'] = grouped_cv_score(np.array(X), np.array(y), np.array(g))
    # PhysioNet 2016: each recording its own subject
    X, y, g = [], [], []
    for db in ('training-a', 'training-b'):
        for r in pd.read_csv(out/'physionet2016'/db/'REFERENCE.csv', header=None).itertuples(index=False):
            X.append(features(out/'physionet2016'/db/f'{r[0]}.wav')); y.append(r[1]); g.append(r[0])
    scores['physionet2016'] = grouped_cv_score(np.array(X), np.array(y), np.array(g))
    # PASCAL: normal / murmur / extrastole, grouped by the subject number in the name
    csv = pd.read_csv(out/'pascal'/'set_b.csv').dropna(subset=['label'])
    X = [features(out/'pascal'/'set_b'/pascal_disk_name(f)) for f in csv.fname]
    g = [int(re.search(r'_(\d{3})_\d{13}_', f)[1]) for f in csv.fname]
    scores['pascal'] = grouped_cv_score(np.array(X), csv.label.values, np.array(g))
    print(scores)
    # seed 0 gives about 0.98 / 0.94 / 0.89; seeds 1-5 gave 0.80-0.91 / 0.77-0.92 / 0.79-0.90
    assert scores['circor_murmur'] > 0.75, scores                            # chance is 1/2
    assert scores['physionet2016'] > 0.7, scores
    assert scores['pascal'] > 0.65, scores                                   # chance is 1/3
