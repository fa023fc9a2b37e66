"""`pahcl.metrics` end to end: a synthetic prediction frame of 3 patients × 2 recordings × 5 cycles through
`evaluate_predictions` for every task, checked against independent computations and hand-worked challenge scores."""
import json, math, warnings
import numpy as np, pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score
from pahcl.config import task_info
from pahcl.metrics import (aggregate, classification_metrics, evaluate_predictions, predictions_frame, prefixed,
                           primary_value, save_confusion)

TASKS = ['circor_murmur', 'circor_outcome', 'physionet2016', 'pascal']
GUIDE_KEYS = ['test_accuracy', 'test_f1', 'test_f1_macro', 'test_auroc', 'test_precision', 'test_recall']
CHALLENGE = {'circor_murmur': ['patient_murmur_weighted_accuracy'], 'circor_outcome': ['patient_outcome_cost'],
             'physionet2016': ['recording_macc', 'recording_se', 'recording_sp'],
             'pascal': ['recording_precision_normal', 'recording_precision_murmur', 'recording_precision_extrasystole',
                        'recording_total_precision']}
EXCLUSIVE = {'circor_murmur': 'patient_murmur_weighted_accuracy', 'circor_outcome': 'patient_outcome_cost',
             'physionet2016': 'recording_macc', 'pascal': 'recording_total_precision'}
APPENDIX_A = ['accuracy', 'f1', 'f1_macro', 'f1_weighted', 'auroc', 'auprc', 'precision', 'recall', 'specificity']

def meta_frame(patient_labels):
    "Task-CSV-like rows: one patient per label in `patient_labels`, 2 recordings × 5 cycles each."
    rows = []
    for p, lab in enumerate(patient_labels):
        for loc in ('AV', 'MV'):
            for c in range(5):
                rows.append(dict(subject=f'{1000+p}', recording=f'{1000+p}_{loc}', location=loc, cycle=f'cycle_{c:03d}', label_id=lab))
    return pd.DataFrame(rows)

def synthetic(task, seed=0):
    "Prediction frame for `task`: 3 patients; the 3-class tasks lack their last class; noisy but informative probabilities."
    info = task_info(task); names, C = info['labels'], info['num_classes']
    meta = meta_frame([0, 1, 0] if C == 3 else [0, 1, 1])
    meta['label'] = [names[i] for i in meta['label_id']]
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(meta), C)) + 1.5*np.eye(C)[meta['label_id']]
    prob = np.exp(logits)/np.exp(logits).sum(1, keepdims=True)
    return predictions_frame(meta, prob, info['label_map']), info

def evaluate_quietly(df, task, label_map):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        m = evaluate_predictions(df, task, label_map)
    assert not caught, [str(w.message) for w in caught]
    return m

@pytest.mark.parametrize('task', TASKS)
def test_every_level_and_key(task):
    df, info = synthetic(task)
    names, C = info['labels'], info['num_classes']
    cols = [f'prob_{n}' for n in names]
    m = evaluate_quietly(df, task, info['label_map'])
    for level, n in (('', 30), ('recording_', 6), ('patient_', 3)):
        assert all(f'{level}{k}' in m for k in APPENDIX_A), level
        assert m[f'{level}n'] == n
        assert all(f'{level}{k}_{name}' in m for k in ('precision', 'recall', 'f1') for name in names)
        cm = np.array(m[f'{level}confusion_matrix']); assert cm.shape == (C, C) and cm.sum() == n
    # cycle level = the metrics of the raw rows; recording level = an independent pandas mean per recording
    y, P = df['label_id'].to_numpy(), df[cols].to_numpy()
    assert m['accuracy'] == pytest.approx((P.argmax(1) == y).mean())
    assert m['f1_macro'] == pytest.approx(f1_score(y, P.argmax(1), average='macro'))
    rec = df.groupby('recording')[cols + ['label_id']].mean()
    assert m['recording_accuracy'] == pytest.approx((rec[cols].to_numpy().argmax(1) == rec['label_id']).mean())
    pat = df.groupby('subject')[cols + ['label_id']].mean()
    assert m['patient_accuracy'] == pytest.approx((pat[cols].to_numpy().argmax(1) == pat['label_id']).mean())
    if C == 3:   # the missing class: NaN per-class recall, AUROC over the two classes present
        assert math.isnan(m[f'recall_{names[2]}'])
        assert m['auroc'] == pytest.approx(np.mean([roc_auc_score(y == k, P[:, k]) for k in (0, 1)]))
    else:
        assert m['auroc'] == pytest.approx(roc_auc_score(y, P[:, 1]))
    assert all(k in m for k in CHALLENGE[task])
    assert not any(EXCLUSIVE[t] in m for t in TASKS if t != task)      # no other task's challenge score
    # final_metrics.json: the guide's keys, plain JSON, NaN survives as NaN
    t = prefixed(m, 'test')
    assert set(GUIDE_KEYS) <= set(t) and not any(isinstance(v, list) for v in t.values())
    back = json.loads(json.dumps(t))
    assert back.keys() == t.keys()
    assert all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(back.values(), t.values()))
    assert math.isfinite(primary_value(m, info['primary_metric']))

def test_missing_class_everywhere():
    "A split without Unknown patients, a model that never predicts it, a single patient: no exception, no warning."
    df, info = synthetic('circor_murmur')
    one = df[df['subject'] == df['subject'].iloc[0]]
    m = evaluate_quietly(one, 'circor_murmur', info['label_map'])
    assert m['patient_n'] == 1 and math.isnan(m['patient_auroc'])
    assert m['patient_murmur_weighted_accuracy'] in (0.0, 1.0)

def hand_frame(patients, label_map):
    "Rows for `patients` = [(label_id, [P(cycle) per recording...]), ...] with exactly chosen probabilities."
    names = [k for k, _ in sorted(label_map.items(), key=lambda kv: kv[1])]
    rows = []
    for p, (lab, recs) in enumerate(patients):
        for r, cycles in enumerate(recs):
            for c, probs in enumerate(cycles):
                rows.append(dict(subject=f's{p}', recording=f's{p}_r{r}', cycle=f'cycle_{c:03d}', label=names[lab], label_id=lab,
                                 **{f'prob_{n}': v for n, v in zip(names, probs)}))
    return pd.DataFrame(rows)

def test_murmur_weighted_accuracy_hand():
    # Present 0 / Absent 1 / Unknown 2. Patient means: s0 Present→Present, s1 Absent→Present, s2 Present→Absent, s3 Unknown→Absent
    lm = task_info('circor_murmur')['label_map']
    df = hand_frame([(0, [[(.8, .1, .1), (.4, .5, .1)]]),          # mean (.6, .3, .1): Present
                     (1, [[(.7, .2, .1)], [(.5, .4, .1)]]),          # mean (.6, .3, .1): Present (wrong)
                     (0, [[(.2, .7, .1), (.3, .6, .1)]]),            # mean Absent (wrong)
                     (2, [[(.1, .5, .4)], [(.1, .7, .2)]])], lm)    # mean (.1, .6, .3): Absent (wrong)
    m = evaluate_quietly(df, 'circor_murmur', lm)
    # truth P A P U, prediction P P A A: correct 1 of 2 Present, 0 of 1 Absent, 0 of 1 Unknown; weights by the true class
    assert m['patient_murmur_weighted_accuracy'] == pytest.approx((5*1 + 3*0 + 1*0)/(5*2 + 3*1 + 1*1))
    assert m['patient_confusion_matrix'] == [[1, 1, 0], [1, 0, 0], [0, 1, 0]]

def test_outcome_cost_hand():
    lm = task_info('circor_outcome')['label_map']            # Normal 0 / Abnormal 1
    df = hand_frame([(1, [[(.2, .8)], [(.6, .4)]]),            # mean Abnormal .6: TP
                     (1, [[(.7, .3), (.9, .1)]]),              # Normal: FN
                     (0, [[(.4, .6)]]),                        # Abnormal: FP
                     (0, [[(.8, .2)]])], lm)                   # TN
    m = evaluate_quietly(df, 'circor_outcome', lm)
    # t = 4, referred s = TP + FP = 2 (s/t = 0.5): 10·4 + (25 + 397·0.5 − 1718·0.25 + 11296·0.0625)·4 + 10000·1 + 50000·1
    expert = (25 + 198.5 - 429.5 + 706)*4
    assert expert == pytest.approx(2000.0)
    assert m['patient_outcome_cost'] == pytest.approx((40 + 2000 + 10000 + 50000)/4)
    assert primary_value(m, 'patient_outcome_cost') == pytest.approx(-62040/4)

def test_physionet2016_macc_hand():
    lm = task_info('physionet2016')['label_map']             # normal 0 / abnormal 1; one recording per subject
    df = hand_frame([(1, [[(.3, .7), (.6, .4), (.2, .8)]]),    # abnormal → abnormal
                     (1, [[(.7, .3)]]),                        # abnormal → normal
                     (1, [[(.1, .9)]]),                        # abnormal → abnormal
                     (0, [[(.9, .1)]]),                        # normal → normal
                     (0, [[(.45, .55)]])], lm)                 # normal → abnormal
    m = evaluate_quietly(df, 'physionet2016', lm)
    assert (m['recording_se'], m['recording_sp']) == (pytest.approx(2/3), pytest.approx(1/2))
    assert m['recording_macc'] == pytest.approx((2/3 + 1/2)/2)
    assert m['recording_sensitivity'] == pytest.approx(m['recording_se'])
    assert m['recording_specificity'] == pytest.approx(m['recording_sp'])

def test_pascal_precision_per_class_hand():
    lm = task_info('pascal')['label_map']                    # normal 0 / murmur 1 / extrasystole 2
    df = hand_frame([(0, [[(.8, .1, .1)], [(.2, .7, .1)]]),    # normal → normal; normal → murmur
                     (1, [[(.1, .8, .1)]]),                    # murmur → murmur
                     (2, [[(.1, .1, .8)], [(.6, .2, .2)]])], lm)  # extrasystole → extrasystole; → normal
    m = evaluate_quietly(df, 'pascal', lm)
    assert m['recording_precision_normal'] == pytest.approx(1/2)        # predicted normal: 2 recordings, 1 right
    assert m['recording_precision_murmur'] == pytest.approx(1/2)
    assert m['recording_precision_extrasystole'] == pytest.approx(1.0)
    assert m['recording_total_precision'] == pytest.approx(2.0)

def test_vote_and_mean_can_differ():
    # one recording: two cycles mildly for class 0, one confidently for class 1
    df = pd.DataFrame(dict(subject='s', recording='r', label_id=1, prob_a=[.55, .55, .01], prob_b=[.45, .45, .99]))
    assert aggregate(df, 'recording', ['prob_a', 'prob_b'])['pred'].item() == 1
    assert aggregate(df, 'recording', ['prob_a', 'prob_b'], how='vote')['pred'].item() == 0

def test_conflicting_labels_named():
    df, info = synthetic('pascal')
    df.loc[3, 'label_id'] = 1                                # cycle of subject 1000's first recording, labelled 0 elsewhere
    with pytest.raises(ValueError, match=r"subject '1000', recording '1000_AV'"):
        evaluate_predictions(df, 'pascal', info['label_map'])

def test_csv_round_trip(tmp_path):
    "predictions_test.csv written and read back (subject ids as text) scores the same."
    df, info = synthetic('circor_outcome', seed=3)
    df.to_csv(tmp_path/'predictions_test.csv', index=False)
    back = pd.read_csv(tmp_path/'predictions_test.csv', dtype={'subject': str, 'recording': str, 'cycle': str})
    a, b = evaluate_predictions(df, 'circor_outcome', info['label_map']), evaluate_predictions(back, 'circor_outcome', info['label_map'])
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, list): assert v == b[k], k
        elif math.isnan(v): assert math.isnan(b[k]), k
        else: assert v == pytest.approx(b[k]), k

def test_save_confusion_overwrites_atomically(tmp_path):
    df, info = synthetic('circor_murmur')
    m = evaluate_predictions(df, 'circor_murmur', info['label_map'])
    for cm in (m['confusion_matrix'], m['patient_confusion_matrix']):
        csv, png = save_confusion(cm, info['labels'], tmp_path/'confusion_matrix')
        assert pd.read_csv(csv, index_col=0).values.tolist() == cm
    assert sorted(p.name for p in tmp_path.iterdir()) == ['confusion_matrix.csv', 'confusion_matrix.png']

def test_metrics_of_a_single_sample_and_bad_input():
    m = classification_metrics([0], [[.9, .1]], class_names=['normal', 'abnormal'])
    assert m['accuracy'] == 1.0 and m['n'] == 1 and math.isnan(m['auroc'])
    with pytest.raises(ValueError, match='empty'):
        classification_metrics([], np.zeros((0, 2)))
    with pytest.raises(ValueError, match='2 class_names'):
        classification_metrics([0], [[.2, .3, .5]], class_names=['a', 'b'])
