"""The PhysioNet 2022 entry as the challenge ran it: a `team_code.py` of one import line driven by a copy of the
challenge's calling convention (its `train_model.py` and `run_model.py`), `pahcl challenge run | score`, bad input,
and `pahcl bench challenge` at a tiny scale."""
import json, os, shutil, subprocess, sys
import numpy as np
import pytest

TEAM_CODE = 'from pahcl.challenge import train_challenge_model, load_challenge_model, run_challenge_model\n'

# What the challenge's scripts do with team_code.py, written from their published description: train on a folder;
# then load the model once, and for each patient hand over the text of its .txt file (label lines removed, as on the
# hidden test set) and its recordings as the integer arrays scipy reads, and write the three returned lists.
CONVENTION = r'''
import os, sys
from scipy.io import wavfile
import team_code

def patient_files(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith('.txt') and f[:-4].isdigit())

def load_recordings(folder, data):
    lines = data.splitlines()
    return [wavfile.read(os.path.join(folder, l.split()[2]))[1] for l in lines[1:1 + int(lines[0].split()[1])]]

if sys.argv[1] == 'train':
    team_code.train_challenge_model(sys.argv[2], sys.argv[3], 1)
else:
    model = team_code.load_challenge_model(sys.argv[2], 1)
    os.makedirs(sys.argv[4], exist_ok=True)
    for f in patient_files(sys.argv[3]):
        data = ''.join(l for l in open(f).read().splitlines(True) if not l.startswith(('#Murmur', '#Outcome')))
        classes, labels, probabilities = team_code.run_challenge_model(model, data, load_recordings(sys.argv[3], data), 1)
        pid = data.split()[0]
        with open(os.path.join(sys.argv[4], pid + '.csv'), 'w') as o:
            o.write('#' + pid + '\n' + ','.join(classes) + '\n' + ','.join(str(int(x)) for x in labels) + '\n'
                    + ','.join(str(float(x)) for x in probabilities) + '\n')
'''

@pytest.fixture(scope='module')
def circor(tmp_path_factory):
    "A synthetic CirCor folder of 15 patients (release 1.0.0: labels in training_data.csv above the patients' folder)."
    from pahcl.demo_data import make_circor
    root = tmp_path_factory.mktemp('challenge')/'circor'
    make_circor(root, n_patients=(6, 6, 3), seconds=(8, 10), seed=5)
    return root

@pytest.fixture(scope='module')
def entry(circor, tmp_path_factory):
    "The entry trained and run through the calling convention: (working folder, completed train process)."
    d = tmp_path_factory.mktemp('entry')
    (d/'team_code.py').write_text(TEAM_CODE); (d/'convention.py').write_text(CONVENTION)
    env = dict(os.environ, PAHCL_BUDGET_MINUTES='1.2')
    run = lambda *a: subprocess.run([sys.executable, 'convention.py', *map(str, a)], cwd=d, env=env, capture_output=True, text=True, timeout=900)
    t = run('train', circor/'training_data', 'model')
    assert t.returncode == 0, t.stderr[-3000:]
    r = run('run', 'model', circor/'training_data', 'outputs')
    assert r.returncode == 0, r.stderr[-3000:]
    return d, t

def test_trained_through_the_convention_within_its_budget(entry):
    d, t = entry
    meta = json.loads((d/'model'/'pahcl_challenge.json').read_text())
    assert meta['budget_minutes'] == 1.2 and meta['minutes'] < 1.2 + 0.5, meta['minutes']   # PAHCL_BUDGET_MINUTES was read
    assert {p.name for p in (d/'model').iterdir()} == {'murmur.pt', 'outcome.pt', 'pahcl_challenge.json'}   # work/ removed
    assert meta['data']['counts']['circor_murmur']['test']['subjects'] == 0        # every patient trains or validates
    assert sum(meta['data']['priors']['murmur']) == pytest.approx(1.0)
    assert 'pretraining:' in t.stdout and 'circor_outcome:' in t.stdout

def test_every_patient_answered_one_class_per_task(entry, circor):
    from pahcl.challenge import read_output, patient_ids, CLASSES
    d, _ = entry
    ids = patient_ids(circor/'training_data')
    assert sorted(p.stem for p in (d/'outputs').glob('*.csv')) == sorted(ids) and len(ids) == 15
    for pid in ids:
        o = read_output(d/'outputs'/f'{pid}.csv')
        assert list(o) == CLASSES
        labels, probs = np.array([v[0] for v in o.values()]), np.array([v[1] for v in o.values()])
        assert labels[:3].sum() == 1 and labels[3:].sum() == 1
        assert probs[:3].sum() == pytest.approx(1, abs=1e-4) and probs[3:].sum() == pytest.approx(1, abs=1e-4)

def test_pahcl_challenge_run_and_score_agree_with_the_convention(entry, circor, pahcl, tmp_path):
    from pahcl.challenge import read_output
    d, _ = entry
    r = pahcl('challenge', 'run', d/'model', circor/'training_data', tmp_path/'outputs', '--quiet')
    assert r.returncode == 0 and '15 patients answered' in r.stdout, r.stderr
    for f in (d/'outputs').glob('*.csv'):
        a, b = read_output(f), read_output(tmp_path/'outputs'/f.name)
        assert [v[0] for v in a.values()] == [v[0] for v in b.values()]
        assert np.allclose([v[1] for v in a.values()], [v[1] for v in b.values()], atol=1e-5)
    r = pahcl('challenge', 'score', circor/'training_data', d/'outputs', tmp_path/'scores.csv', '--json')
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.splitlines()[-1])
    assert s['patients'] == s['answered'] == 15
    assert 0 <= s['murmur_weighted_accuracy'] <= 1 and s['outcome_cost'] > 0
    assert s['ci']['murmur_weighted_accuracy'][0] <= s['murmur_weighted_accuracy'] <= s['ci']['murmur_weighted_accuracy'][1]
    assert 'murmur_weighted_accuracy,' in (tmp_path/'scores.csv').read_text()

def test_a_patient_without_a_usable_recording_still_gets_an_answer(entry):
    from pahcl.challenge import load_challenge_model, run_challenge_model, CLASSES
    d, _ = entry
    model = load_challenge_model(d/'model', verbose=0)
    text = '9 3 4000\nAV 9_AV.hea 9_AV.wav\nMV 9_MV.hea 9_MV.wav\nTV 9_TV.hea 9_TV.wav\n#Age: Child\n'
    for recs in ([np.zeros(40000, np.int16), np.ones(300, np.int16), np.array([], np.int16)], []):
        classes, labels, probs = run_challenge_model(model, text, recs, 0)
        assert classes == CLASSES and labels.tolist() == [0, 1, 0, 1, 0]           # Unknown, Abnormal: the documented answer
        assert probs[:3].sum() == pytest.approx(1) and probs[3:].sum() == pytest.approx(1)
    classes, labels, _ = run_challenge_model(model, 'not a patient file', [np.zeros(10, np.int16)], 0)
    assert labels.tolist() == [0, 1, 0, 1, 0]

def test_an_unreadable_recording_is_named_and_the_patient_still_answered(entry, circor, pahcl, tmp_path):
    "`pahcl challenge run` warns about a recording it cannot read and answers its patient from the others."
    from pahcl.challenge import read_output, patient_ids, CLASSES
    d, _ = entry
    data = tmp_path/'data'; data.mkdir()
    pids = patient_ids(circor/'training_data')[:2]
    for pid in pids:
        for f in (circor/'training_data').glob(f'{pid}*'): shutil.copy(f, data/f.name)
    bad = sorted(data.glob(f'{pids[0]}_*.wav'))[0]; bad.write_bytes(b'RIFF, but not a wav')
    r = pahcl('challenge', 'run', d/'model', data, tmp_path/'out', '--quiet')
    assert r.returncode == 0 and '2 patients answered' in r.stdout, r.stderr
    assert bad.name in r.stderr and 'cannot read this recording' in r.stderr
    for pid in pids: assert list(read_output(tmp_path/'out'/f'{pid}.csv')) == CLASSES

@pytest.mark.parametrize('args,needle', [
    (('challenge', 'train', '{tmp}/empty', '{tmp}/model'), 'no patient .txt files'),
    (('challenge', 'run', '{tmp}/nomodel', '{data}', '{tmp}/out'), 'no pahcl_challenge.json here'),
    (('challenge', 'score', '{tmp}/empty', '{tmp}/out'), 'no patient .txt files here'),
    (('challenge', 'train', '{data}', '{tmp}/model', '--budget-minutes', '0'), 'positive number of minutes'),
    (('bench', 'challenge', '--data-root', '{data}', '--folds', '1'), '--folds 1'),
])
def test_bad_input_is_one_line(pahcl, tmp_path, circor, args, needle):
    (tmp_path/'empty').mkdir()
    r = pahcl(*[a.format(tmp=tmp_path, data=circor/'training_data') for a in args])
    assert r.returncode == 2 and needle in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr

def test_bench_challenge_two_folds(pahcl, circor, tmp_path):
    r = pahcl('bench', 'challenge', '--data-root', circor, '--folds', '2', '--budget-minutes', '0.6', '--out', tmp_path/'b', '--json')
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(r.stdout.strip().splitlines()) == 1, r.stdout[:2000]          # --json: the JSON line only
    res = json.loads(r.stdout)
    assert set(res['pooled']) == {'pahcl', 'classical', 'classical_gbt', 'always_absent_normal', 'always_present_abnormal'}
    assert len(res['folds']) == 2 and sum(f['patients'] for f in res['folds']) == res['patients'] == 15
    triv = res['pooled']['always_absent_normal']            # 6 Absent, 6 Present, 3 Unknown: (1·6) / (5·6 + 3·3 + 1·6)
    assert triv['murmur_weighted_accuracy'] == pytest.approx(6 / 45)
    assert set(res['paired']) == {'pahcl - classical', 'pahcl - classical_gbt'} and set(res['targets']) == {'murmur_weighted_accuracy', 'outcome_cost'}
    assert (tmp_path/'b'/'challenge.md').read_text().startswith('| entry |')
