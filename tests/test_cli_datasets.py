"""`pahcl demo-data`, `pahcl datasets` and `pahcl download` as a user types them."""
import json, shutil
import numpy as np, soundfile as sf
import pytest
import hashlib, zipfile
from test_download import serve

@pytest.fixture(scope='module')
def demo_dir(tmp_path_factory):
    from pahcl.demo_data import make_demo_datasets
    d = tmp_path_factory.mktemp('demo')
    make_demo_datasets(d, seed=0, scale='small')
    return d

def test_demo_data_then_datasets_shows_all_three(pahcl, tmp_path):
    r = pahcl('demo-data', '--out', tmp_path/'raw', '--seed', '1')
    assert r.returncode == 0, r.stderr
    r = pahcl('datasets', '--raw-dir', tmp_path/'raw', '--json')
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(s) == ['circor', 'pascal', 'physionet2016']
    assert set(s['circor']['labels']) == {'murmur', 'outcome'}
    assert set(s['circor']['labels']['murmur']) == {'Present', 'Absent', 'Unknown'}
    assert set(s['physionet2016']['labels']['label']) == {'normal', 'abnormal'}
    assert set(s['pascal']['labels']['label']) == {'normal', 'murmur', 'extrastole'}
    assert all(v['problems'] == [] and v['hours'] > 0 for v in s.values())
    r = pahcl('datasets', '--raw-dir', tmp_path/'raw')                       # the human table
    assert r.returncode == 0 and 'physionet2016' in r.stdout and 'murmur (per patient)' in r.stdout

def test_demo_data_refuses_to_overwrite_real_data(pahcl, tmp_path):
    (tmp_path/'circor').mkdir(); (tmp_path/'circor'/'training_data.csv').write_text('Patient ID\n1\n')
    r = pahcl('demo-data', '--out', tmp_path)
    assert r.returncode == 2 and 'refusing to overwrite' in r.stderr and 'Traceback' not in r.stderr

def test_problem_files_reported_and_strict_fails(pahcl, demo_dir, tmp_path):
    raw = tmp_path/'raw'; shutil.copytree(demo_dir/'physionet2016', raw/'physionet2016')
    wavs = sorted((raw/'physionet2016'/'training-a').glob('*.wav'))
    wavs[0].write_bytes(b'')                                                   # zero-byte recording
    wavs[1].write_text('not audio')                                            # text named .wav
    x, sr = sf.read(wavs[2]); sf.write(wavs[2], np.stack([x, x], 1), sr)       # 2 channels: valid, read
    r = pahcl('datasets', '--raw-dir', raw, '--json')
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)['physionet2016']
    bad = {p['file'].rsplit('/', 1)[-1] for p in s['problems']}
    assert {wavs[0].name, wavs[1].name} <= bad and wavs[2].name not in bad
    assert s['recordings'] == len(list((demo_dir/'physionet2016').rglob('*.wav'))) - 2
    r = pahcl('datasets', '--raw-dir', raw, '--strict')
    assert r.returncode == 1 and '--strict' in r.stderr

def test_datasets_on_an_empty_folder_says_what_to_do(pahcl, tmp_path):
    r = pahcl('datasets', '--raw-dir', tmp_path)
    assert r.returncode == 2 and 'no dataset found' in r.stderr and 'pahcl demo-data' in r.stderr

def test_real_data_counts_through_the_cli(pahcl, shared_data):
    r = pahcl('datasets', '--raw-dir', shared_data, '--json')
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s['physionet2016']['recordings'] == 690
    assert s['physionet2016']['labels']['label'] == {'normal': 500, 'abnormal': 190}
    assert (s['circor']['subjects'], s['circor']['recordings']) == (301, 997)
    assert s['circor']['labels']['murmur'] == {'Present': 57, 'Absent': 222, 'Unknown': 22}
    assert s['circor']['labels']['outcome'] == {'Normal': 155, 'Abnormal': 146}
    assert s['pascal']['recordings'] == 656
    assert s['pascal']['labels']['label'] == {'normal': 320, 'murmur': 95, 'extrastole': 46}
    assert all(v['problems'] == [] for v in s.values())

def mirror_demo_physionet(demo_dir, www):
    "A PhysioNet-like mirror: the demo PhysioNet 2016 training folders zipped, with a SHA256SUMS.txt."
    d = www/'physionet2016'; d.mkdir(parents=True)
    with zipfile.ZipFile(d/'training.zip', 'w') as z:
        for f in sorted((demo_dir/'physionet2016').rglob('*')):
            if f.is_file() and f.parent.name.startswith('training-'): z.write(f, f.relative_to(demo_dir/'physionet2016').as_posix())
    (d/'SHA256SUMS.txt').write_text(f"{hashlib.sha256((d/'training.zip').read_bytes()).hexdigest()}  training.zip\n")

def test_download_from_a_local_mirror_then_again(pahcl, demo_dir, tmp_path):
    www = tmp_path/'www'; mirror_demo_physionet(demo_dir, www)
    with serve(www) as (srv, url):
        args = ('download', '--dataset', 'physionet2016', '--raw-dir', tmp_path/'raw', '--base-url', url, '--quiet')
        r = pahcl(*args)
        assert r.returncode == 0 and 'physionet2016: downloaded' in r.stdout, r.stderr
        r = pahcl(*args)
        assert r.returncode == 0 and 'physionet2016: already present' in r.stdout, r.stderr
    r = pahcl('datasets', '--raw-dir', tmp_path/'raw', '--json')
    s = json.loads(r.stdout)['physionet2016']
    assert s['recordings'] == len(list((demo_dir/'physionet2016').rglob('*.wav'))) and s['problems'] == []

def test_download_pascal_prints_the_manual_steps(pahcl, tmp_path):
    r = pahcl('download', '--dataset', 'pascal', '--raw-dir', tmp_path)
    assert r.returncode == 0 and 'pascal: manual' in r.stdout and 'set_b' in r.stdout
