"""Pretrain the encoder shipped with pahcl (`--pretrained pahcl-tiny`) and write its model card.

    python tools/make_pretrained.py --data-root ../shared/data --minutes 10
    python tools/make_pretrained.py --processed bench_quality/processed --minutes 10   # cycles already made
    python tools/make_pretrained.py --card-only      # the card again, after a new stored benchmark run

Preprocesses --data-root (or takes the cycles of --processed), pretrains PA-HCL with the `tiny` preset on the
cycles of every subject there (pahcl's own 10 % of subjects held out for validation and the choice of the best
epoch) for about --minutes, and writes into pahcl/weights/:
- pahcl-tiny.pt: the best epoch's encoder alone (no projection heads, optimizer or run config), a `pretrain`
  checkpoint that `load_checkpoint` reads with `weights_only=True`;
- pahcl-tiny.json: what went in and what came out (data, epochs, steps, criterion, minutes, torch, commit, command);
- pahcl-tiny.md: the model card, from that JSON and the figures the same recipe earned in the stored quality
  benchmark (nbs/benchmarks/quality_cv_60min.json), with its intended use and limits.
"""
import argparse, json, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS, NAME = ROOT/'pahcl'/'weights', 'pahcl-tiny'
QUALITY = ROOT/'nbs'/'benchmarks'/'quality_cv_60min.json'

def pretrain_all(processed:Path, minutes:float, seed:int, work:Path) -> dict:
    "Pretrain the tiny preset on every subject of `processed` for about `minutes`; the run's summary and planned steps."
    from pahcl.config import load_config
    from pahcl.models import apply_preset
    from pahcl.pretrain import pretrain, pretrain_splits
    from pahcl.speed import pretrain_rate
    from pahcl.studies import plan_steps
    from pahcl.training import RunLimits
    sets = ['training.num_workers=0', 'training.warmup_epochs=1', f'seed={seed}']
    cfg = apply_preset(load_config('pretrain', sets=sets), 'tiny')
    train, val, counts = pretrain_splits(processed, cfg['data']['val_ratio'], seed)
    bs = int(cfg['training']['batch_size'])
    epochs, steps = plan_steps(pretrain_rate(cfg, train), minutes * 60, max(1, len(train) // bs), min_epochs=5, max_epochs=100)
    s = pretrain(cfg, processed, work/'run', epochs=epochs, device='cpu', quiet=True, overwrite=True,
                 limits=RunLimits(max_steps_per_epoch=steps, time_budget_s=minutes * 60, mid_epoch_stop=True))
    return dict(s, counts=counts, planned_epochs=epochs, steps_per_epoch=steps, batch_size=bs)

def encoder_only(best:Path, out:Path) -> dict:
    "Write the encoder of checkpoint `best` alone to `out`; its model config, epoch and number of parameters."
    from pahcl.models import load_checkpoint, load_encoder_only, save_checkpoint
    ck = load_checkpoint(best)
    enc = load_encoder_only(ck)
    save_checkpoint(out, kind='pretrain', encoder=enc, epoch=ck['epoch'], metrics=ck.get('metrics'))
    return dict(model_config=ck['model_config'], epoch=ck['epoch'], parameters=sum(p.numel() for p in enc.parameters()))

def source(processed:Path, data_root) -> str:
    "The raw folder the cycles of `processed` were made from (`data_root`, or what its processing_stats.json says)."
    if data_root: return str(data_root)
    stats = processed/'processing_stats.json'
    return json.loads(stats.read_text()).get('raw_dir', str(processed)) if stats.exists() else str(processed)

def recipe_figures(q:dict) -> list:
    "Rows (task, metric, scratch, linear, finetune, classical best) of the stored quality benchmark `q`, pooled over its folds."
    rows = []
    for task, m in q.get('tasks', {}).items():
        best = max(('classical', 'classical_gbt'), key=lambda k: m[k]['primary'])
        rows.append((task, m['linear']['primary_metric'], *(f"{m[k]['primary']:.3f}" for k in ('scratch', 'linear', 'finetune', best))))
    return rows

def recipe_summary(q:dict) -> str:
    "What the stored benchmark `q`'s paired intervals and pooled figures say about the frozen probe, in one or two sentences."
    if not q: return 'No stored quality benchmark was found.'
    tasks = list(q['tasks'])
    ahead = [t for t in tasks if q['paired'][t]['linear']['vs_scratch']['ci'][0] > 0]
    behind = [t for t in tasks if q['tasks'][t]['linear']['primary'] < max(q['tasks'][t][k]['primary'] for k in ('classical', 'classical_gbt'))]
    return (f"The frozen encoder's probe is ahead of the same network trained from scratch, its paired AUROC interval above "
            f"zero, on {len(ahead)} of {len(tasks)} tasks; its primary figure is below the better classical model's on "
            f"{len(behind)} of {len(tasks)}.")

def model_card(facts:dict) -> str:
    "The model card of the shipped encoder, in Markdown."
    c, mc = facts['counts'], facts['model_config']
    q = json.loads(QUALITY.read_text()) if QUALITY.exists() else {}     # read once for the table and the summary
    rows = '\n'.join(f'| {t} | {m} | {a} | {b} | {f} | {g} |' for t, m, a, b, f, g in recipe_figures(q))
    return f"""# Model card: `{NAME}`

A PA-HCL heart-sound encoder (CNN + Mamba, `tiny` preset: CNN channels {mc['cnn_channels']}, Mamba width
{mc['mamba_d_model']}, {mc['mamba_n_layers']} layer; {facts['parameters']:,} parameters), pretrained without labels by
physiology-aware hierarchical contrastive learning: cycle-level and sub-structure-level (S1, systole, S2, diastole)
contrast on 4000-sample heart cycles at 2 kHz. Use it as `--pretrained {NAME}` anywhere a checkpoint path is asked for.

## Data
Every cycle of the shared recordings: CirCor DigiScope 2022, PhysioNet/CinC 2016 (four databases) and PASCAL set B,
{c['cycles']:,} cycles of {c['subjects']:,} subjects; {c['train_cycles']:,} cycles of {c['train_subjects']} subjects for
training, {c['val_cycles']:,} of {c['val_subjects']} held out for validation. No label was used.

## Training
{facts['epochs']} epochs of at most {facts['steps_per_epoch']} steps of {facts['batch_size']} cycles ({facts['minutes']} minutes on
{facts['threads']} CPU threads, torch {facts['torch']}); the best epoch ({facts['best_epoch']}) by {facts['criterion']}
({facts['best']:.4f}) is kept. Commit {facts['commit']}; made by `{facts['command']}` from the cycles
`pahcl preprocess` made of `{facts['source']}`.

## Figures
This file has heard every shared subject, so it cannot be scored on them. What the same recipe earns, measured by
`pahcl bench quality --data-root ../shared/data --budget-minutes 60` (5-fold cross-validation by subject, each fold
pretraining its own encoder on its training subjects only; primary metric, pooled out-of-fold):

| task | metric | scratch | frozen PA-HCL, linear probe | PA-HCL fine-tuned (LP-FT) | best classical |
|---|---|---|---|---|---|
{rows}

{recipe_summary(q)} See the results chapter.

## Intended use and limits
- A starting point for fine-tuning or linear probes on heart-sound cycles of 4000 samples at 2 kHz, made by pahcl's
  own preprocessing (band-pass 25-400 Hz, segmentation into cycles).
- A research tool: not a medical device, not for diagnosis.
- Do not report figures of it on the shared CirCor, PhysioNet 2016 or PASCAL subjects: it has seen them (without
  labels). Score it on other recordings, or pretrain per fold as `bench quality` does.
- A small model trained for minutes on two CPU cores: it trades accuracy for a laptop's budget.
"""

def rewrite_card(out:Path) -> int:
    "The model card made again from the facts beside the weights and the stored benchmark's latest figures."
    from pahcl.files import write_atomic
    if not (out/f'{NAME}.json').exists():
        print(f'make_pretrained: {out/NAME}.json not found; make the weights first (--data-root or --processed)', file=sys.stderr); return 2
    write_atomic(out/f'{NAME}.md', model_card(json.loads((out/f'{NAME}.json').read_text())))
    print(f"{out/f'{NAME}.md'}: figures from {QUALITY.relative_to(ROOT)}"); return 0

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data-root', help='raw datasets in their original layouts (e.g. ../shared/data)')
    ap.add_argument('--processed', help='cycles already made by pahcl preprocess (instead of --data-root)')
    ap.add_argument('--minutes', type=float, default=10.0, help='training time (default 10)')
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--out', default=str(WEIGHTS), help=f'folder for the three files (default: {WEIGHTS.relative_to(ROOT)})')
    ap.add_argument('--card-only', action='store_true', help=f'rewrite {NAME}.md from {NAME}.json and the stored benchmark, training nothing')
    a = ap.parse_args(argv)
    if a.card_only: return rewrite_card(Path(a.out))
    if bool(a.data_root) == bool(a.processed):
        print('make_pretrained: give --data-root or --processed (one of them)', file=sys.stderr); return 2
    import torch
    from pahcl.files import write_atomic
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        processed = Path(a.processed) if a.processed else work/'processed'
        if a.data_root:
            from pahcl.preprocess import preprocess
            preprocess(a.data_root, processed, progress=False)
        s = pretrain_all(processed, a.minutes, a.seed, work)
        out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
        enc = encoder_only(Path(s['best_model']), out/f'{NAME}.pt')
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    facts = dict(name=NAME, counts=s['counts'], epochs=s['epochs'], planned_epochs=s['planned_epochs'], steps_per_epoch=s['steps_per_epoch'],
                 batch_size=s['batch_size'], criterion=s['criterion'], best=s['best'], best_epoch=s['best_epoch'],
                 minutes=round(s['seconds'] / 60, 1), threads=torch.get_num_threads(), torch=torch.__version__,
                 model_config=enc['model_config'], seed=a.seed, commit=commit or 'unknown',
                 parameters=enc['parameters'],
                 source=source(processed, a.data_root),
                 command='python tools/make_pretrained.py ' + ' '.join(argv if argv is not None else sys.argv[1:]))
    write_atomic(out/f'{NAME}.json', json.dumps(facts, indent=1, default=float) + '\n')
    write_atomic(out/f'{NAME}.md', model_card(facts))
    print(f"{out/f'{NAME}.pt'}: {facts['epochs']} epochs, best {facts['criterion']} {facts['best']:.4f} (epoch {facts['best_epoch']}), "
          f"{(out/f'{NAME}.pt').stat().st_size / 1e6:.2f} MB; card {out/f'{NAME}.md'}")
    return 0

if __name__ == '__main__': sys.exit(main())
