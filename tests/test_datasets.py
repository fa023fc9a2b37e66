"""Dataset readers on the real recordings in ../shared/data (those tests skip when that folder is absent),
on the synthetic demo datasets, and against the task registry.

The expected counts are those published with the folder (its README): they check the readers, not
the other way round."""
from collections import Counter
from pathlib import Path
import pytest
from pahcl.config import list_tasks, task_info
from pahcl.datasets import (DATASETS, LABEL_SETS, canonical_name, find_datasets, format_summary, read_dataset,
                            summarize)

DATA = Path(__file__).parents[1].parent/'shared'/'data'
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f'real data folder {DATA} not present')

@pytest.fixture(scope='module')
def found(): return find_datasets(DATA)

@pytest.fixture(scope='module')
def read(found):
    "Each dataset read once, strictly: any problem on these folders fails the tests."
    return {name: read_dataset(name, root, strict=True) for name, root in found.items()}

@needs_data
def test_find(found):
    assert found == {'circor': DATA/'circor2022', 'physionet2016': DATA/'physionet2016', 'pascal': DATA/'pascal2011'}
    assert find_datasets(DATA/'physionet2016'/'training-b') == {'physionet2016': DATA/'physionet2016'/'training-b'}

@needs_data
def test_physionet2016(read):
    recs, problems = read['physionet2016']
    assert problems == []
    assert len(recs) == 690 and len({r.subject for r in recs}) == 690
    assert all(r.subject == r.recording for r in recs)
    assert Counter(r.labels['label'] for r in recs) == {'normal': 500, 'abnormal': 190}
    assert Counter(r.source for r in recs).keys() == {'training-b', 'training-c', 'training-d', 'training-f'}
    assert {r.sample_rate for r in recs} == {2000} and all(r.header is not None for r in recs)

@needs_data
def test_circor(read):
    recs, problems = read['circor']
    assert problems == []
    assert len(recs) == 997 and len({r.recording for r in recs}) == 997
    patients = {r.subject: r.labels for r in recs}
    assert len(patients) == 301
    assert Counter(l['murmur'] for l in patients.values()) == {'Absent': 222, 'Present': 57, 'Unknown': 22}
    assert Counter(l['outcome'] for l in patients.values()) == {'Normal': 155, 'Abnormal': 146}
    # two recordings at one location stay apart, at that location
    twice = {r.recording: r.location for r in recs if r.subject == '50348' and r.location == 'AV'}
    assert twice == {'50348_AV_1': 'AV', '50348_AV_2': 'AV'}
    assert all(r.annotation is not None and r.annotation.suffix == '.tsv' for r in recs)
    for r in recs:
        assert r.labels['recording_murmur'] == (r.location in r.labels['murmur_locations'])
        assert (r.labels['murmur'] == 'Present') == bool(r.labels['murmur_locations'])

@needs_data
def test_pascal(read):
    recs, problems = read['pascal']
    assert problems == []
    assert len(recs) == 656
    labelled = [r for r in recs if r.labels['label'] is not None]
    assert len(labelled) == 461
    assert Counter(r.labels['label'] for r in labelled) == {'normal': 320, 'murmur': 95, 'extrastole': 46}
    noisy = Counter(r.labels['label'] for r in recs if r.labels['noisy'])
    on_disk = Counter(p.name.split('_noisy')[0] for p in (DATA/'pascal2011'/'set_b').glob('*_noisy*.wav'))
    assert noisy == on_disk and sum(noisy.values()) > 0          # noisy variants folded into their class
    r = next(r for r in recs if r.recording == 'normal__103_1305031931979_B')
    assert (r.subject, r.location, r.labels) == ('103', 'B', {'label': 'normal', 'noisy': False})

@needs_data
def test_summarize_matches_readers(read):
    s = summarize(DATA)
    assert list(s) == list(DATASETS)
    for name, (recs, _) in read.items():
        assert s[name]['recordings'] == len(recs) and s[name]['problems'] == []
    assert s['circor']['labels'] == {'murmur': {'Present': 57, 'Absent': 222, 'Unknown': 22},
                                     'outcome': {'Normal': 155, 'Abnormal': 146}}
    assert s['physionet2016']['labels'] == {'label': {'normal': 500, 'abnormal': 190}}
    assert s['pascal']['labels'] == {'label': {'normal': 320, 'murmur': 95, 'extrastole': 46}}
    assert (s['pascal']['unlabelled'], s['physionet2016']['subjects'], s['circor']['subjects']) == (195, 690, 301)
    assert s['circor']['sample_rates'] == {4000: 997} and s['physionet2016']['sample_rates'] == {2000: 690}
    # the README's "about 10.3 hours of audio in all"
    assert 10.1 < sum(v['hours'] for v in s.values()) < 10.5
    assert summarize(DATA, 'pascal') == {'pascal': s['pascal']}
    text = format_summary(s)
    assert 'murmur (per patient): Present 57, Absent 222, Unknown 22' in text and 'problem:' not in text

def test_tasks_use_reader_classes():
    "Each packaged task names a dataset the readers know, and classes they produce (PASCAL's extrastole is renamed)."
    for task in list_tasks():
        info = task_info(task)
        name = canonical_name(info['dataset'])
        produced = {c for kind in LABEL_SETS[name].values() for c in kind}
        renamed = {'extrasystole': 'extrastole'} if name == 'pascal' else {}
        assert {renamed.get(c, c) for c in info['labels']} <= produced, task

def test_demo_datasets_read_back(tmp_path):
    "The synthetic demo datasets (chapter 4) are written in the real layouts: the readers find them all, with no problem."
    demo = pytest.importorskip('pahcl.demo_data')
    counts = demo.make_demo_datasets(tmp_path, seed=1)
    assert set(find_datasets(tmp_path)) == set(DATASETS)
    s = summarize(tmp_path, strict=True)
    c, p, b = s['circor'], s['physionet2016'], s['pascal']
    assert (c['subjects'], c['recordings']) == (counts['circor']['patients'], counts['circor']['recordings'])
    assert c['labels'] == {k: {n: counts['circor'][k][n] for n in c['labels'][k]} for k in ('murmur', 'outcome')}
    assert sum(c['labels']['murmur'].values()) == counts['circor']['patients']
    assert p['recordings'] == counts['physionet2016']['recordings']
    assert p['labels']['label'] == {'normal': counts['physionet2016']['normal'], 'abnormal': counts['physionet2016']['abnormal']}
    assert (b['recordings'], b['subjects'], b['unlabelled']) == (counts['pascal']['files'], counts['pascal']['subjects'],
                                                                 counts['pascal']['unlabelled'])
    assert b['labels']['label'] == {k: counts['pascal'][k] for k in ('normal', 'murmur', 'extrastole') if counts['pascal'][k]}
