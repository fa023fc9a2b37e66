"""Does the PA-HCL encoder of a quality run hold more than a random encoder of the same shape? (on real recordings)

Usage (after `pahcl bench quality --folds 1 --out OUT`, which leaves the task views and the pretrained encoders in OUT):

    python tools/quality_probe_vs_random.py --out OUT [--variants pahcl cycle_only sub_only] [--checkpoints best_model.pt]
                                            [--random-seeds 0] [--crossfit] [--json FILE]

For each task it fits chapter 22's `demo_probes` probe (standardised, class-balanced logistic regression, C picked on the
validation split by AUROC) on the frozen embeddings of every checkpoint `OUT/pretrain/<variant>/<checkpoint>` and of a
random encoder built from the same model config with each of `--random-seeds`, all on the same training cycles, and
scores them on the task's test split (the bench's capped view) at the task's level: the AUROC of each, and the
paired-bootstrap 95 % interval of their difference; for tasks of three or more classes (PASCAL), also each class's AUROC
against the rest, with the number of test units of each class; and, over all tasks, the mean AUROC difference with an
interval whose bootstrap draws resample every task's units. `--crossfit` scores the validation split's subjects too
(chapter 21's `crossfit_probe_predictions`: the test subjects get the C chosen on validation, the validation subjects the
C chosen on test), which doubles the units of a comparison that the test split alone leaves wide. A random encoder is one draw of many, so give several seeds to see
how far its probe moves from one draw to the next. Any pretraining run of the same architecture placed under
OUT/pretrain can be compared, e.g. a longer one with epoch checkpoints (`pahcl pretrain ... --set training.save_interval=5`).
"""
import argparse, json
from pathlib import Path
from pahcl.studies import demo_probes, pop_mean_differences
from pahcl.data import read_split

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', required=True, help='the folder of a `pahcl bench quality --folds 1 --out` run')
    ap.add_argument('--variants', nargs='+', default=['pahcl', 'cycle_only', 'sub_only'], help='pretraining runs under OUT/pretrain')
    ap.add_argument('--checkpoints', nargs='+', default=['best_model.pt'], help='checkpoint file names in each variant')
    ap.add_argument('--random-seeds', type=int, nargs='+', default=[0], help='seeds of the random encoders (and of probes and bootstrap)')
    ap.add_argument('--crossfit', action='store_true', help='score the validation subjects too, each split with the C the other chose')
    ap.add_argument('--json', help='also write the full result (intervals, balanced accuracies) to this file')
    a = ap.parse_args()
    out = Path(a.out)
    paths = {(f'{v}/{c}' if len(a.checkpoints) > 1 else v): out/'pretrain'/v/c for v in a.variants for c in a.checkpoints}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing: raise SystemExit(f"{out}: missing checkpoint(s) {', '.join(missing)}; run `pahcl bench quality --folds 1 --out {out}` first "
                                 "(or name the variants and checkpoints that exist under OUT/pretrain)")
    tasks = [t.name for t in sorted((out/'tasks').iterdir()) if (t/'test.csv').exists()]
    ext = {t: read_split(out/'tasks'/t, 'test')[0] for t in tasks}
    caches = {}                          # each checkpoint is embedded once, whatever the number of random seeds
    res = {s: demo_probes(paths, out/'tasks', ext, tasks, seed=s, crossfit=a.crossfit, keep_predictions=True,
                          caches=caches) for s in a.random_seeds}
    mean = {s: pop_mean_differences(r, out/'tasks', tasks, seed=s) for s, r in res.items()}   # the JSON keeps figures, not frames
    if a.crossfit: print('(cross-fitted: the validation and test subjects of each task are scored)\n')
    first = res[a.random_seeds[0]]
    print(f"| task ({'validation and test' if a.crossfit else 'test'} units) | encoder | AUROC | " + ' | '.join(f'random seed {s}: AUROC, difference [95 % interval]' for s in a.random_seeds) + ' |')
    print('|---|---|---|' + '---|' * len(a.random_seeds))
    for t in tasks:
        for n in paths:
            r = first[n][t]['random']
            cells = [f"{res[s][n][t]['random']['auroc']:.3f}, {res[s][n][t]['difference']:+.3f} "
                     f"[{res[s][n][t]['difference_ci'][0]:+.3f}, {res[s][n][t]['difference_ci'][1]:+.3f}]" for s in a.random_seeds]
            print(f"| {t} ({r['units']} {r['level']}s) | {n} | {first[n][t]['pretrained']['auroc']:.3f} | " + ' | '.join(cells) + ' |', flush=True)
    n0 = next(iter(paths))               # the random encoders are the same for every checkpoint
    for t in tasks:                      # a macro AUROC of three classes can hang on the smallest: show each class
        units = first[n0][t]['random']['class_units']
        if len(units) < 3: continue
        print(f'\n| {t}: one class against the rest | ' + ' | '.join(f'{c} ({k})' for c, k in units.items()) + ' |')
        print('|---|' + '---|' * len(units))
        rows = [(n, first[n][t]['pretrained']) for n in paths] + [(f'random seed {s}', res[s][n0][t]['random']) for s in a.random_seeds]
        for n, r in rows: print(f'| {n} | ' + ' | '.join(f"{r['class_auroc'][c]:.3f}" if c in r['class_auroc'] else '–' for c in units) + ' |')
    avg = lambda r, k: sum(r[t][k]['auroc'] for t in tasks) / len(tasks)
    print(f'\n| mean over the {len(tasks)} tasks | encoder | AUROC | ' + ' | '.join(f'random seed {s}: AUROC, difference [95 % interval]'
                                                                        for s in a.random_seeds) + ' |')
    print('|---|---|---|' + '---|' * len(a.random_seeds))
    for n in paths:
        cells = [f"{avg(res[s][n], 'random'):.3f}, {mean[s][n]['difference']:+.3f} "
                 f"[{mean[s][n]['difference_ci'][0]:+.3f}, {mean[s][n]['difference_ci'][1]:+.3f}]"
                 for s in a.random_seeds]
        print(f"| {', '.join(tasks)} | {n} | {avg(first[n], 'pretrained'):.3f} | " + ' | '.join(cells) + ' |')
    if a.json: Path(a.json).write_text(json.dumps({str(s): dict(r, mean_difference=mean[s], crossfit=a.crossfit)
                                                   for s, r in res.items()}, indent=1))

if __name__ == '__main__': main()
