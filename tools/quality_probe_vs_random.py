"""Does the PA-HCL encoder of a quality run hold more than a random encoder of the same shape? (issue 7, on real recordings)

Usage (after `pahcl bench quality --out OUT`, which leaves the task views and the pretrained encoders in OUT):

    python tools/quality_probe_vs_random.py --out OUT [--variants pahcl cycle_only sub_only] [--seed 0] [--json FILE]

For each task it fits chapter 14's `demo_probes` probe (standardised, class-balanced logistic regression, C picked on the
validation split by AUROC) on the frozen embeddings of every variant's `best_model.pt` and of a random encoder built from
the same model config with `--seed`, all on the same training cycles, and scores them on the task's test split (the
bench's capped view) at the task's level: AUROC of each, and the paired-bootstrap 95 % interval of their difference.
"""
import argparse, json
from pathlib import Path
from pahcl.bench import demo_probes
from pahcl.data import read_split

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', required=True, help='the folder of a `pahcl bench quality --out` run')
    ap.add_argument('--variants', nargs='+', default=['pahcl', 'cycle_only', 'sub_only'], help='pretraining runs under OUT/pretrain')
    ap.add_argument('--checkpoint', default='best_model.pt', help="which checkpoint of each variant (default best_model.pt)")
    ap.add_argument('--seed', type=int, default=0, help='seed of the random encoder, the probes and the bootstrap')
    ap.add_argument('--json', help='also write the full result (intervals, balanced accuracies) to this file')
    a = ap.parse_args()
    out = Path(a.out)
    missing = [v for v in a.variants if not (out/'pretrain'/v/a.checkpoint).exists()]
    if missing: raise SystemExit(f"{out}: no pretrain/<variant>/{a.checkpoint} for {missing}; run `pahcl bench quality --out {out}` first")
    tasks = [t.name for t in sorted((out/'tasks').iterdir()) if (t/'test.csv').exists()]
    ext = {t: read_split(out/'tasks'/t, 'test')[0] for t in tasks}
    res = demo_probes({v: out/'pretrain'/v/a.checkpoint for v in a.variants}, out/'tasks', ext, tasks, seed=a.seed)
    print('| task (test units) | random encoder | ' + ' | '.join(f'{v}: AUROC, difference [95 % interval]' for v in a.variants) + ' |')
    print('|---|---|' + '---|' * len(a.variants))
    for t in tasks:
        r = res[a.variants[0]][t]['random']
        cells = [f"{res[v][t]['pretrained']['auroc']:.3f}, {res[v][t]['difference']:+.3f} "
                 f"[{res[v][t]['difference_ci'][0]:+.3f}, {res[v][t]['difference_ci'][1]:+.3f}]" for v in a.variants]
        print(f"| {t} ({r['units']} {r['level']}s) | {r['auroc']:.3f} | " + ' | '.join(cells) + ' |', flush=True)
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))

if __name__ == '__main__': main()
