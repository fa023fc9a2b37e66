"""Few-shot with a frozen encoder: would a logistic regression on 10 % of the training subjects keep 90 % of full fine-tuning?

Usage (after `pahcl bench quality --folds 1 --out OUT`, which leaves the task views, the pretrained encoders and quality.json in OUT):

    python tools/quality_fewshot_probe.py --out OUT [--ratio 0.1] [--seeds 42 0 1]

For each task and seed it draws `ratio` of the training subjects with chapter 9's `few_shot` (the draw `fewshot10` trains
on when the seed is the bench's), fits the bench's probe (`quality_probe`: standardised, class-balanced logistic regression,
C picked on val by the primary metric, the decision line drawn on val) on the frozen PA-HCL encoder's embeddings of their
cycles (at most the bench's `max_cycles` per recording) and prints the test primary metric beside the bench's `linear`,
`finetune` and `fewshot10`.
"""
import argparse, json
from pathlib import Path
from pahcl.probes import cached_embedder, quality_probe, cycle_predictions
from pahcl.stats import quality_metrics, primary_interval
from pahcl.studies import cap_cycles
from pahcl.data import read_split, task_info_json, few_shot
from pahcl.metrics import evaluate_predictions
from pahcl.models import load_encoder_only

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', required=True, help='the folder of a `pahcl bench quality --folds 1 --out` run')
    ap.add_argument('--ratio', type=float, default=0.1)
    ap.add_argument('--seeds', type=int, nargs='+', default=None, help="few-shot draws (default: the bench's seed)")
    a = ap.parse_args()
    out = Path(a.out); res = json.loads((out/'quality.json').read_text())
    seeds = a.seeds or [res['seed']]
    embed = cached_embedder(load_encoder_only(out/'pretrain'/'pahcl'/'best_model.pt').eval())
    print("| task (primary) | linear, all subjects | finetune | fewshot10 (fine-tuned) | " +
          ' | '.join(f'frozen-encoder probe, {a.ratio:.0%} of subjects, seed {s}' for s in seeds) + ' |')
    print('|---|---|---|---|' + '---|' * len(seeds))
    for task, m in res['tasks'].items():
        lmap = task_info_json(out/'tasks'/task)['label_map']
        sp = {s: read_split(out/'tasks'/task, s)[0] for s in ('train', 'val', 'test')}
        score = lambda df, p: quality_metrics(evaluate_predictions(cycle_predictions(df, p, lmap), task, lmap), task)
        Zv, Zt = embed(sp['val']), embed(sp['test'])
        cells = []
        for s in seeds:
            few = cap_cycles(few_shot(sp['train'], a.ratio, seed=s), res['max_cycles'])
            probe, _, _ = quality_probe(embed(few), few.label_id.to_numpy(int), Zv, sp['val'], task, lmap, seed=s)
            pt = probe(Zt)
            lo, hi = primary_interval(cycle_predictions(sp['test'], pt, lmap), task, lmap, seed=res['seed'])
            cells.append(f"{score(sp['test'], pt)['primary']:.3f} [{lo:.2f}, {hi:.2f}] ({few.subject.nunique()} subjects)")
        f = lambda k: f"{m[k]['primary']:.3f}" if k in m else '–'
        print(f"| {task} ({m['linear']['primary_metric']}) | {f('linear')} | {f('finetune')} | {f('fewshot10')} | " + ' | '.join(cells) + ' |', flush=True)

if __name__ == '__main__': main()
