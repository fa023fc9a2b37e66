"""Does any pretraining setting make the PA-HCL encoder's linear probe beat a random encoder's on the demo data?

Usage (after `pahcl bench demo --out OUT`, which leaves the demo's processed cycles, tasks and new subjects in OUT):

    python tools/demo_probe_ablation.py --out OUT [--variants base no_mask ...] [--random-seeds 8]

For each variant it pretrains the `tiny` model for 3 epochs exactly as `bench demo` does (seed 0, or each of `--pretrain-seeds`), with the variant's
config overrides, and prints, for the run's `best_model.pt` (chosen by kNN accuracy on the demo's small validation
splits) and for its `last.pt` (the end of the schedule), the AUROC on the new subjects of a logistic-regression probe of its encoder and of a random
encoder (seed 0), with their paired-bootstrap difference. `--random-seeds N` also probes N random encoders (seeds 0..N-1)
on circor_outcome, to show the spread of the random baseline. Pretraining runs go to OUT/ablation/<variant>.
"""
import argparse, time
from pathlib import Path
import numpy as np, torch
from pahcl.probes import probe_predictions, cached_embedder
from pahcl.stats import unit_bootstrap
from pahcl.studies import external_tables, demo_probes
from pahcl.config import load_config, list_tasks
from pahcl.data import read_split, task_info_json
from pahcl.models import apply_preset, build_encoder, load_encoder_only
from pahcl.pretrain import pretrain

OLD = ['augmentation.bandpass_jitter_hz=10']     # the default (every variant but no_bandpass keeps it); the record's table predates its 2026-11-30 fix
VARIANTS = {
    'base': OLD,
    'no_bandpass': ['augmentation.bandpass_jitter_hz=0'],
    'no_mask': OLD + ['augmentation.time_mask_fraction=0'],
    'no_stretch': OLD + ['augmentation.time_stretch=[1.0,1.0]'],
    'no_noise': OLD + ['augmentation.noise_snr_db=[60.0,60.0]'],
    'no_gain_noise': OLD + ['augmentation.noise_snr_db=[60.0,60.0]', 'augmentation.gain_db=[0.0,0.0]'],
    'weak': ['augmentation.bandpass_jitter_hz=0', 'augmentation.time_mask_fraction=0', 'augmentation.time_stretch=[1.0,1.0]'],
    'cycle_only': OLD + ['loss.lambda_sub=0'],
    'sub_only': OLD + ['loss.lambda_cycle=0'],
    'temperature_0.2': OLD + ['loss.temperature=0.2'],
}

def random_spread(checkpoint, out:Path, ext, task:str, seeds:int) -> list:
    "AUROC on the new subjects of the probe of `seeds` random encoders shaped like `checkpoint`'s."
    cfg = load_encoder_only(checkpoint).config
    lmap = task_info_json(out/'downstream'/task)['label_map']
    tr, va = read_split(out/'downstream'/task, 'train')[0], read_split(out/'downstream'/task, 'val')[0]
    res = []
    for s in range(seeds):
        torch.manual_seed(s); e = build_encoder(cfg).eval()
        res.append(unit_bootstrap(probe_predictions(cached_embedder(e), tr, va, ext, task, lmap, 0), task, lmap, 100, 0)['auroc'])
    return res

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', required=True, help='the folder of a `pahcl bench demo --out` run')
    ap.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument('--random-seeds', type=int, default=8)
    ap.add_argument('--pretrain-seeds', type=int, nargs='+', default=[0], help='pretrain each variant once per seed')
    a = ap.parse_args()
    out, tasks = Path(a.out), list_tasks()
    ext = external_tables(out/'external_raw', out/'external_processed', tasks, None, [])
    tasks = [t for t in tasks if t in ext]
    print('| variant | checkpoint | ' + ' | '.join(f'{t}: pretrained / random, difference [95 %]' for t in tasks) + ' |')
    print('|---|---|' + '---|' * len(tasks))
    base_ckpt = None
    for name, seed in [(n, s) for n in a.variants for s in a.pretrain_seeds]:
        t0, run = time.perf_counter(), out/'ablation'/(name if seed == 0 else f'{name}_seed{seed}')
        pcfg = apply_preset(load_config('pretrain', sets=['training.num_workers=0', 'training.warmup_epochs=1', 'training.batch_size=64',
                            'evaluation.knn_max_train=500', 'evaluation.knn_max_val=300', f'seed={seed}'] + VARIANTS[name]), 'tiny')
        ps = pretrain(pcfg, out/'processed', run, epochs=3, exclude_tasks_dir=out/'downstream', quiet=True, overwrite=True)
        base_ckpt = base_ckpt or ps['best_model']
        probes = demo_probes({'best': ps['best_model'], 'last': run/'last.pt'}, out/'downstream', ext, tasks, 0, 300)
        for which, epoch in (('best', ps['best_epoch']), ('last', ps['last']['epoch'])):
            pr = probes[which]
            cells = [f"{v['pretrained']['auroc']:.3f} / {v['random']['auroc']:.3f}, {v['difference']:+.3f} "
                     f"[{v['difference_ci'][0]:+.3f}, {v['difference_ci'][1]:+.3f}]" for v in (pr[t] for t in tasks)]
            label = name if len(a.pretrain_seeds) == 1 else f'{name}, seed {seed}'
            print(f'| {label} | {which}, epoch {epoch} | ' + ' | '.join(cells) + f' |  <!-- {time.perf_counter()-t0:.0f} s -->', flush=True)
    if a.random_seeds and 'circor_outcome' in tasks:
        r = random_spread(base_ckpt, out, ext['circor_outcome'], 'circor_outcome', a.random_seeds)
        print(f"\ncircor_outcome, random encoders (seeds 0..{a.random_seeds - 1}): " + ', '.join(f'{x:.3f}' for x in r)
              + f"; mean {np.mean(r):.3f}, sd {np.std(r, ddof=1):.3f}")

if __name__ == '__main__': main()
