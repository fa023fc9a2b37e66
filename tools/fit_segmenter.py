"""Refit the heart-sound segmenter's parameters on the CirCor `.tsv` annotations.

    python tools/fit_segmenter.py --raw-dir ../shared/data/circor2022 --out pahcl/assets/segmenter.json

The patients are split at random (seeded): the parameters are fitted on `--train-fraction` of them,
the rest are held out and scored with `pahcl.segment.bench_segmentation`; the training patient ids
and the held-out scores are written into the parameter file, so `held_out_patients()` can repeat the
held-out benchmark later.

The emission weight (`emission.weight`, how much the frame classifier counts against the duration
model) is then chosen on the *training* patients: each weight of `--weights` is scored with
`bench_segmentation` on them and the best S1 F1 + S2 F1 is kept; the held-out patients play no part.
"""
import argparse, sys, time
import numpy as np
from pahcl.segment import (annotated_circor, fit_segmenter, read_annotation, read_audio, bench_segmentation,
                           save_segmenter_params, SegmentError)

def split_patients(patients, train_fraction:float, seed:int) -> tuple:
    "Seeded random split of patient ids into (train, held-out) sets."
    pats = sorted(set(patients), key=lambda p: (len(p), p))
    rng = np.random.default_rng(seed); rng.shuffle(pats)
    n = int(round(train_fraction*len(pats)))
    return set(pats[:n]), set(pats[n:])

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--raw-dir', '--raw_dir', required=True, help='CirCor folder (training_data/ with .wav and .tsv), or a folder holding it')
    ap.add_argument('--out', default='pahcl/assets/segmenter.json', help='parameter file to write (JSON)')
    ap.add_argument('--train-fraction', type=float, default=0.5, help='share of patients to fit on; the rest are held out')
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--no-eval', action='store_true', help='skip the held-out benchmark')
    ap.add_argument('--weights', default='0.3,0.4,0.5,0.6,0.8,1.0',
                    help='emission weights to try on the training patients (comma-separated); one value skips the search')
    a = ap.parse_args(argv)
    if not 0 < a.train_fraction <= 1: ap.error('--train-fraction must be in (0, 1]')
    try: items = annotated_circor(a.raw_dir)
    except SegmentError as e: print(f'error: {e}', file=sys.stderr); return 2
    train, held = split_patients([p for p, _, _ in items], a.train_fraction, a.seed)
    def recordings():
        for p, wav, tsv in items:
            if p in train:
                x, sr = read_audio(wav)
                yield x, sr, read_annotation(tsv)
    t0 = time.perf_counter()
    params = fit_segmenter(recordings())
    params['fit'].update(source='CirCor 2022 training_data .tsv annotations', seed=a.seed, train_fraction=a.train_fraction,
                         seconds=round(time.perf_counter() - t0, 1), patients=sorted(train, key=lambda p: (len(p), p)))
    print(f"fitted on {params['fit']['recordings']} recordings of {len(train)} patients in {params['fit']['seconds']} s; "
          f"frame accuracy {params['fit']['classifier_accuracy']}")
    weights = [float(w) for w in a.weights.split(',')]
    if len(weights) > 1:
        scores = {}
        for w in weights:
            r = bench_segmentation(a.raw_dir, params={**params, 'emission': {**params['emission'], 'weight': w}}, patients=train)
            scores[w] = (r['s1_f1'], r['s2_f1']); print(f'emission weight {w:g} on the training patients: S1 F1 {r["s1_f1"]}, S2 F1 {r["s2_f1"]}')
        best = max(weights, key=lambda w: sum(scores[w]))
        params['emission']['weight'] = best
        params['fit']['emission_weight_search'] = dict(weights=weights, train_s1_f1=[scores[w][0] for w in weights],
                                                       train_s2_f1=[scores[w][1] for w in weights])
    else: params['emission']['weight'] = weights[0]
    if held and not a.no_eval:
        r = bench_segmentation(a.raw_dir, params=params, patients=held)
        params['fit']['held_out'] = dict(patients=len(held), **r)
        print('held-out patients:', r)
    print('wrote', save_segmenter_params(params, a.out))
    return 0

if __name__ == '__main__': sys.exit(main())
