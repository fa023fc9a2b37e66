"""The user's guide (../shared/seeds), sections 2-5 and 7, typed as a researcher types it, on a fresh demo folder.

Each command is a line of the guide with `python scripts/X.py` read as `pahcl X` (the README's table) and, where a
run would take hours, `--epochs 1` added. The guide's YAML blocks are in tests/guide/ exactly as the guide prints
them (checked against the guide when ../shared/seeds is present). The stages are module fixtures in the guide's
order: raw data (§2.1), cycles (§2.2), tasks (§2.3), a pretrained encoder, then the runs of §3-§5 and §7.
"""
import ast, contextlib, io, json, os, re, shlex, subprocess, sys, warnings
from pathlib import Path
import pandas as pd
import pytest
from conftest import ROOT, SHARED_DATA
from pahcl.cli import main, build_parser

GUIDE_YAML = ROOT/'tests'/'guide'
PRETRAINED = 'checkpoints/pretrain/best_model.pt'

def pahcl(cmd:str, cwd) -> tuple:
    "Run `pahcl CMD` in-process in folder `cwd`, as typed; (exit code, stdout, stderr)."
    out, err, old = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter('default')
            try: rc = main(shlex.split(cmd))
            except SystemExit as e: rc = e.code
    finally: os.chdir(old)
    return rc, out.getvalue(), err.getvalue()

def ok(cmd:str, cwd) -> tuple:
    rc, out, err = pahcl(cmd, cwd)
    assert rc == 0, f'pahcl {cmd}\n{err}'
    return out, err

def refused(cmd:str, cwd, *needles) -> str:
    "The command exits 2 with one error line that holds every needle; no traceback, any note or warning on one line each."
    rc, out, err = pahcl(cmd, cwd)
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith('usage:') and not l.startswith('  ')]
    errors = [l for l in lines if ': error:' in l]
    assert rc == 2 and 'Traceback' not in err and len(errors) == 1, f'pahcl {cmd}: rc {rc}\n{err}'
    assert all(l.startswith('pahcl ') for l in lines), err
    for n in needles: assert n in errors[0], (n, errors[0])
    return errors[0]

def metrics(run:Path) -> dict: return json.loads((run/'final_metrics.json').read_text())

def test_yaml_blocks_are_the_guides():
    seeds = ROOT.parent/'shared'/'seeds'
    if not seeds.is_dir(): pytest.skip('the guide (../shared/seeds) is not here')
    text = ''.join(p.read_text(encoding='utf-8') for p in sorted(seeds.glob('*.txt')))
    blocks = re.findall(r'```yaml\n(.*?)```', text, re.S)
    assert [(GUIDE_YAML/n).read_text(encoding='utf-8') for n in
            ('my_config.yaml', 'finetune.yaml', 'circor_murmur.yaml', 'circor_outcome.yaml')] == blocks[:4]

# ---- §2 data preparation ------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def home(tmp_path_factory):
    "A researcher's project folder: the guide's YAML files in configs/, small demo datasets in data/raw (§2.1, offline)."
    d = tmp_path_factory.mktemp('guide')
    (d/'configs').mkdir()
    for f in GUIDE_YAML.glob('*.yaml'): (d/'configs'/f.name).write_text(f.read_text(encoding='utf-8'), encoding='utf-8')
    from pahcl.demo_data import make_circor, make_physionet2016, make_pascal       # `pahcl demo-data`, fewer subjects
    make_circor(d/'data'/'raw'/'circor', n_patients=(5, 5, 4), seconds=(6, 7), seed=3)
    make_physionet2016(d/'data'/'raw'/'physionet2016', n_records={'training-a': (7, 7, (6, 7))}, seed=3)
    make_pascal(d/'data'/'raw'/'pascal', n_subjects=(5, 5, 5, 2), files_per_subject=(1, 2), seconds=(4, 5), seed=3)
    return d

@pytest.fixture(scope='module')
def processed(home):
    out, _ = ok('preprocess --raw_dir data/raw --output_dir data/processed --num_workers 2 --quiet', home)     # §2.2
    assert (home/'data'/'processed'/'processing_stats.json').exists() and 'cycles in' in out
    return home

@pytest.fixture(scope='module')
def tasks(processed):
    home = processed
    out, _ = ok('prepare --dataset all --raw-dir data/raw --processed-dir data/processed --output-dir data/downstream '
                '--seed 42 --verbose', home)                                                                        # §2.3
    for t in ('circor_murmur', 'circor_outcome', 'physionet2016', 'pascal'):
        d = home/'data'/'downstream'/t
        assert (d/'task_config.json').exists() and (d/'train.csv').read_text().startswith('# class_weights: [')
    return home

@pytest.fixture(scope='module')
def pretrained(tasks):
    home = tasks
    ok('pretrain --processed-dir data/processed --exclude-tasks-dir data/downstream --preset tiny --epochs 1 '
       '--max-steps-per-epoch 3 --quiet', home)
    assert (home/PRETRAINED).exists()
    return home

def test_2_3_prepare_one_dataset_and_its_seed(tasks, tmp_path):
    home = tasks
    ok('prepare --dataset circor', home)                      # §2.3 "准备特定数据集": defaults data/raw, data/processed, data/downstream
    rc, _, err = pahcl('run prepare --seed 7 --data-dir other', home)       # `pahcl run prepare --seed` reaches the split
    assert rc == 0, err
    split = lambda d: pd.read_csv(home/d/'circor_outcome'/'test.csv', comment='#').subject.unique().tolist()
    assert split('data/downstream') != split('other')
    (tmp_path/'folders.yaml').write_text('data:\n  base_dir: other2\n')           # the config's folders are pahcl run's defaults
    ok(f'run prepare --config {tmp_path}/folders.yaml', home)
    assert split('other2') == split('data/downstream')

def test_2_missing_labels_file_names_it(tasks, tmp_path):
    "FAQ 6.1: a CirCor folder without training_data.csv (and no labels in its .txt files) names the file to put there."
    import shutil
    raw = tmp_path/'raw'; shutil.copytree(tasks/'data'/'raw'/'circor', raw/'circor')
    (raw/'circor'/'training_data.csv').unlink()
    for t in (raw/'circor'/'training_data').glob('*.txt'):
        t.write_text(''.join(l for l in t.read_text().splitlines(keepends=True) if not l.startswith(('#Murmur', '#Outcome'))))
    refused(f'prepare --dataset circor --raw-dir {raw} --processed-dir data/processed --output-dir {tmp_path/"down"}', tasks,
            'training_data.csv', '§6.1')

# ---- §3 fine-tuning --------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def run31(pretrained):
    home = pretrained
    ok(f'finetune --task circor_murmur --pretrained {PRETRAINED} --output-dir outputs --experiment-name my_experiment --epochs 1 --quiet', home)
    return home/'outputs'/'circor_murmur_my_experiment'

def test_3_1_run_folder_is_the_guides(run31):
    for f in ('config.yaml', 'train.log', 'best_model.pt', 'final_model.pt', 'final_metrics.json'):
        assert (run31/f).exists(), f
    assert list(run31.glob('events.out.tfevents.*'))
    m = metrics(run31)
    assert list(m)[:6] == ['test_accuracy', 'test_f1', 'test_f1_macro', 'test_auroc', 'test_precision', 'test_recall']   # §4.1
    assert m['metrics'] == ['accuracy', 'f1', 'f1_macro', 'auroc', 'precision', 'recall']

def test_3_2_modes_and_shot_ratio(pretrained):
    home = pretrained
    ok(f'finetune --task circor_murmur --pretrained {PRETRAINED} --linear-eval --epochs 1 --experiment-name lin --quiet', home)
    ok(f'finetune --task circor_murmur --pretrained {PRETRAINED} --few-shot --shot-ratio 0.1 --epochs 1 --experiment-name fs --quiet', home)
    assert metrics(home/'outputs'/'circor_murmur_lin')['mode'] == 'linear'
    assert metrics(home/'outputs'/'circor_murmur_fs')['few_shot_ratio'] == 0.1
    refused(f'finetune --task circor_murmur --pretrained {PRETRAINED} --shot-ratio 0.2 --experiment-name x', home, '--shot-ratio', '--few-shot')
    assert not (home/'outputs'/'circor_murmur_x').exists()

def test_3_3_pretrained_defaults_to_pretrain_checkpoint_path(pretrained, tmp_path):
    home = pretrained
    ok('finetune --task pascal --epochs 1 --experiment-name default_ckpt --quiet', home)     # pretrain.checkpoint_path
    assert metrics(home/'outputs'/'pascal_default_ckpt')['pretrained'] == PRETRAINED
    refused(f'finetune --task pascal --set pretrain.checkpoint_path={tmp_path}/none.pt --experiment-name z', home,
            'pretrain.checkpoint_path', 'none.pt')
    assert not (home/'outputs'/'pascal_z').exists()                           # a run that fails before training leaves nothing

def test_3_4_train_all_and_summarize(pretrained):
    home = pretrained
    ok('run train-all --epochs 1 --quiet', home)
    ok('run train-all linear --epochs 1 --quiet', home)
    for t in ('circor_murmur', 'circor_outcome', 'physionet2016', 'pascal'):
        assert metrics(home/'outputs'/f'{t}_finetune')['mode'] == 'finetune' and metrics(home/'outputs'/f'{t}_linear')['mode'] == 'linear'
    refused('run train-all --epochs 1 --quiet', home, 'holds an earlier run', '--overwrite', '--resume')
    out, _ = ok('run summarize', home)                                                        # §4.4
    assert 'Accuracy' in out and 'circor_outcome_finetune' in out
    refused('run summarize linear', home, "unexpected word 'linear'")
    refused('run summarize --epochs 3', home, 'does not use --epochs')

def test_3_6_reusing_an_experiment_name(run31, pretrained):
    home = pretrained
    cmd = f'finetune --task circor_murmur --pretrained {PRETRAINED} --experiment-name my_experiment --epochs 1 --quiet'
    before = (run31/'train.log').read_text()
    refused(cmd, home, 'holds an earlier run', '--resume', '--overwrite')
    assert (run31/'train.log').read_text() == before                          # nothing of the first run touched
    ok(cmd + ' --overwrite', home)
    assert 'holds an earlier run' not in (run31/'train.log').read_text() and len(list(run31.glob('events.out.tfevents.*'))) == 1

# ---- §4 evaluation ---------------------------------------------------------------------------------------------------
def test_4_2_evaluate(run31, pretrained):
    out, _ = ok('evaluate --checkpoint outputs/circor_murmur_my_experiment/best_model.pt --task circor_murmur '
                '--data-dir data/downstream --split test', pretrained)
    assert 'test_accuracy' in out and (run31/'eval_circor_murmur_test'/'metrics.json').exists()

def test_4_3_tensorboard_tags_never_go_back(run31, pretrained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    for run in (run31, pretrained/'checkpoints'/'pretrain'):
        ea = EventAccumulator(str(run)); ea.Reload()
        tags = ea.Tags()['scalars']
        assert any(t.startswith('step/') for t in tags) and any(t.startswith('epoch/') for t in tags), tags
        assert all(t.split('/')[0] in ('step', 'epoch') for t in tags), tags       # per-step and per-epoch under their own tags
        for t in tags:
            steps = [e.step for e in ea.Scalars(t)]
            assert steps == sorted(set(steps)), (run, t, steps)

# ---- §5 advanced use -------------------------------------------------------------------------------------------------
def test_5_1_my_config_alone_names_the_task(pretrained):
    home = pretrained
    _, err = ok(f'finetune --config configs/my_config.yaml --pretrained {PRETRAINED} --epochs 1', home)
    run = home/'outputs'/'circor_murmur_downstream'
    cfg = ok(f'config --config {run}/config.yaml --json', home)[0]
    cfg = json.loads(cfg)
    assert (cfg['task']['name'], cfg['downstream']['num_classes'], cfg['training']['batch_size']) == ('circor_murmur', 3, 64)
    assert (cfg['training']['learning_rate'], cfg['training']['early_stopping_patience']) == (5e-4, 20)
    assert 'use_amp' in (run/'train.log').read_text() and 'Traceback' not in err    # AMP on a CPU: a note, not an error
    assert 'DataLoader will create' not in err                                  # training.num_workers fits the machine

def test_5_2_learning_rate_search(pretrained):
    for lr in ('1e-3', '5e-4'):
        ok(f'finetune --task circor_murmur --pretrained {PRETRAINED} --lr {lr} --experiment-name lr_{lr} --epochs 1 --quiet', pretrained)
    assert json.loads(ok('config --config outputs/circor_murmur_lr_5e-4/config.yaml --json', pretrained)[0])['training']['learning_rate'] == 5e-4

def test_5_3_cross_dataset(pretrained):
    home = pretrained
    ok(f'finetune --task circor_outcome --pretrained {PRETRAINED} --experiment-name circor_trained --epochs 1 --quiet', home)
    out, _ = ok('evaluate --checkpoint outputs/circor_outcome_circor_trained/best_model.pt --task physionet2016 --data-dir data/downstream', home)
    assert 'test_accuracy' in out

def test_5_4_ensemble_beside_its_runs_and_in_the_summary(pretrained):
    home = pretrained
    for seed in (42, 123):
        ok(f'finetune --task circor_murmur --pretrained {PRETRAINED} --seed {seed} --experiment-name seed_{seed} --epochs 1 --quiet', home)
    cks = ' '.join(sorted(str(p.relative_to(home)) for p in (home/'outputs').glob('circor_murmur_seed_*/best_model.pt')))
    ok(f'ensemble --checkpoints {cks} --task circor_murmur', home)
    assert (home/'outputs'/'circor_murmur_ensemble_test'/'metrics.json').exists()
    out, _ = ok('summarize', home)
    assert 'circor_murmur_ensemble_test' in out

# ---- §7 configuration reference --------------------------------------------------------------------------------------
def test_7_1_full_file_with_a_task(pretrained):
    home = pretrained
    _, err = ok(f'finetune --config configs/finetune.yaml --task circor_murmur --pretrained {PRETRAINED} --epochs 1 '
                '--experiment-name full71 --quiet', home)
    assert 'generic' in err and 'DataLoader will create' not in err
    cfg = json.loads(ok('config --config outputs/circor_murmur_full71/config.yaml --json', home)[0])
    assert cfg['downstream']['num_classes'] == 3 and cfg['downstream']['label_map'] == {'Present': 0, 'Absent': 1, 'Unknown': 2}
    assert (cfg['training']['grad_clip_norm'], cfg['training']['save_interval'], cfg['evaluation']['save_confusion_matrix']) == (1.0, 10, True)
    refused('finetune --config configs/finetune.yaml --epochs 1', home, 'no task')

@pytest.mark.parametrize('task', ['circor_murmur', 'circor_outcome'])
def test_7_2_task_files_as_config(pretrained, task):
    home = pretrained
    ok(f'finetune --config configs/{task}.yaml --pretrained {PRETRAINED} --epochs 1 --experiment-name file72 --quiet', home)
    m = metrics(home/'outputs'/f'{task}_file72')
    assert m['primary_metric'] == ('f1_macro' if task == 'circor_murmur' else 'auroc')

# ---- round trips, and nothing accepted and ignored -------------------------------------------------------------------
@pytest.mark.parametrize('task', ['circor_murmur', 'pascal'])
def test_config_round_trip(home, task):
    printed = ok(f'config --task {task}', home)[0]
    (home/f'{task}.yaml').write_text(printed)
    assert ok(f'config --config {task}.yaml', home)[0] == printed

def test_run_config_reproduces_the_run(run31, pretrained):
    home = pretrained
    saved = (run31/'config.yaml').read_text()
    assert ok(f'config --config {run31}/config.yaml', home)[0] == saved.split('\n#')[0].rstrip('\n') + '\n'
    rc, _, err = pahcl(f'finetune --config {run31}/config.yaml --pretrained {PRETRAINED} --overwrite --quiet', home)
    assert rc == 0 and 'note' not in err, err          # the run's own model section is the checkpoint's: nothing to say
    assert (run31/'config.yaml').read_text().split('\n#')[0] == saved.split('\n#')[0]

def test_architecture_flags_with_a_checkpoint_say_who_wins(pretrained):
    home = pretrained
    _, err = ok(f'finetune --task pascal --pretrained {PRETRAINED} --set model.mamba_d_model=64 --epochs 1 --experiment-name arch --quiet', home)
    assert 'model.mamba_d_model 64' in err and 'architecture wins' in err
    _, err = ok(f'finetune --task pascal --pretrained {PRETRAINED} --preset cpu --epochs 1 --experiment-name arch2 --quiet', home)
    assert 'architecture wins' in err

def test_evaluation_metrics_is_honoured(pretrained, tmp_path):
    home = pretrained
    (tmp_path/'m.yaml').write_text('evaluation:\n  metrics: [auroc, specificity]\n')
    out, _ = ok(f'finetune --task pascal --config {tmp_path}/m.yaml --pretrained {PRETRAINED} --epochs 1 --experiment-name mets --quiet', home)
    m = metrics(home/'outputs'/'pascal_mets')
    assert list(m)[:2] == ['test_auroc', 'test_specificity'] and out.split(',')[0].startswith('test_auroc')
    ok('summarize', home)
    assert 'specificity' in pd.read_csv(home/'outputs'/'summary.csv').columns
    refused('config --set evaluation.metrics=[acuracy]', home, "'evaluation.metrics'", 'acuracy')

def test_sample_rate_must_be_the_cycles(pretrained):
    refused(f'finetune --task pascal --pretrained {PRETRAINED} --set data.sample_rate=4000 --experiment-name sr', pretrained,
            'data.sample_rate is 4000', 'cut at 5000 Hz')
    assert not (pretrained/'outputs'/'pascal_sr').exists()

def test_unknown_names_get_the_closest(home):
    refused('finetune --task circor_murmr', home, "did you mean 'circor_murmur'")
    refused('config --set training.lr=1e-4', home, "did you mean 'training.learning_rate'")
    refused('config --set downstream.use_amp=true', home, "did you mean 'training.use_amp'")

# ---- logs and errors -------------------------------------------------------------------------------------------------
def test_bad_device_and_paths_are_one_line(pretrained):
    home = pretrained
    import torch
    if not torch.cuda.is_available():
        refused('finetune --task pascal --device cuda --experiment-name dev', home, '--device cuda', 'no GPU')
        assert not (home/'outputs'/'pascal_dev').exists()
        refused('evaluate --checkpoint outputs/any/best_model.pt --task pascal --device cuda', home, 'no GPU')
    refused('finetune --task pascal --data-dir nowhere --experiment-name nw', home, 'nowhere')
    refused('evaluate --checkpoint outputs/none/best_model.pt --task pascal', home, 'best_model.pt')
    refused('preprocess --raw_dir nowhere --output_dir x', home, 'nowhere')
    refused('pretrain --processed-dir nowhere --output-dir ck2', home, 'nowhere')
    assert not (home/'ck2').exists()
    r = subprocess.run([sys.executable, '-m', 'pahcl', 'finetune', '--task', 'pascal', '--data-dir', 'nowhere'], cwd=home,
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr, r.stderr

def test_every_suggested_command_exists():
    "Every `pahcl ...` command that a message of the package suggests parses as typed."
    found = set()
    for f in (ROOT/'pahcl').glob('*.py'):
        text = re.sub(r'''(["'])\s*\n\s*f?\1''', '', f.read_text())          # strings continued on the next line, joined
        found |= set(re.findall(r'[Rr]un `(pahcl [^`]+)`', text)) | set(re.findall(r'[Rr]un (pahcl [a-z-]+)', text))
    cmds = sorted(c for c in found if not ('|' in c or '<' in c or 'COMMAND' in c))          # not a synopsis
    assert any(c.startswith('pahcl download --dataset') for c in cmds) and len(cmds) > 8, cmds
    parser = build_parser()
    for c in cmds:
        typed = re.sub(r'\{[^}]*(name|dataset|missing)[^}]*\}', 'circor', c)
        typed = re.sub(r'\{[^}]*\}', 'x', typed).replace('DIR', 'x').replace('PATH', 'x')
        argv = [a for a in shlex.split(typed)[1:] if a not in ('…', '...')]
        try: parser.parse_args(argv)
        except SystemExit as e: pytest.fail(f'suggested command does not parse: {c!r} ({e})')

def test_help_is_quick_and_shows_real_defaults():
    code = ("import sys; from pahcl.cli import main; rc = main(['config']); "
            "assert 'torch' not in sys.modules, 'pahcl config imported torch'; sys.exit(rc)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == 'command').choices
    for name, p in [('pahcl', parser), *subs.items()]:
        h = p.format_help()
        assert '(default: None)' not in h and '(default: False)' not in h, name

def test_demo_summary_says_when_a_test_split_is_small(tasks):
    from pahcl.pipeline import small_split_note
    n = json.loads((tasks/'data'/'downstream'/'circor_outcome'/'task_config.json').read_text())['counts']['test']['subjects']
    assert n < 20 and f'{n} test subjects: too few to judge' in small_split_note(tasks/'data'/'downstream'/'circor_outcome')

# ---- papermill: the guide's notebooks --------------------------------------------------------------------------------
# `papermill --help-notebook` lists every parameter with a type and a help text and warns about none, and an executed
# notebook shows one progress line per epoch. These fail if a line of a `parameters` cell is one papermill cannot parse
# (a help comment holding `=`, a value over several lines: the parameter is then missing from the listing and `-p` warns
# "Passed unknown parameter"), if a parameter has no type or no help text, or if training runs quietly.
NBS = ROOT/'nbs'
EPOCH_LINE = re.compile(r'\bepoch (\d+): train_loss ')           # what pahcl.finetune / pahcl.pretrain log at each epoch's end

def parameters_cell(nb_path) -> str:
    "The source of the notebook's cell tagged `parameters`."
    cells = [c for c in json.loads(Path(nb_path).read_text())['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(cells) == 1, f'{nb_path}: {len(cells)} cells tagged parameters'
    return ''.join(cells[0]['source'])

def parameter_names(src:str) -> list:
    "Names the parameters cell assigns, read with Python's own parser (not papermill's)."
    names = []
    for node in ast.parse(src).body:
        if isinstance(node, ast.AnnAssign): names.append(node.target.id)
        elif isinstance(node, ast.Assign): names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names

def help_listing(nb_path) -> tuple:
    "({name: (type, default, help)} from `papermill --help-notebook`, its stdout + stderr)."
    r = subprocess.run([sys.executable, '-m', 'papermill', '--help-notebook', str(nb_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    listed, last = {}, None
    for line in r.stdout.splitlines():
        m = re.match(r'^  (\w+): (.+?) \(default (.*?)\)\s*(.*)$', line)
        if m: last = m[1]; listed[last] = [m[2], m[3], m[4].strip()]
        elif last and line.startswith(' ' * 30) and line.strip() and not listed[last][2]: listed[last][2] = line.strip()
    return {k: tuple(v) for k, v in listed.items()}, r.stdout + r.stderr

def check_help(nb_path):
    src = parameters_cell(nb_path)
    names = parameter_names(src)
    assert names, f'{nb_path}: no parameters'
    listed, out = help_listing(nb_path)
    assert not re.search(r'warn|unable to parse|unknown parameter', out, re.I), out
    assert set(names) == set(listed), f'not listed by papermill: {sorted(set(names) - set(listed))}; extra: {sorted(set(listed) - set(names))}'
    for name, (typ, default, help_) in listed.items():
        assert typ != 'Unknown type', f'{name}: papermill infers no type'
        assert help_, f'{name}: no help text'

@pytest.mark.parametrize('nb', ['finetune.ipynb', 'pretrain.ipynb'])
def test_help_notebook_lists_every_parameter(nb):
    check_help(NBS/nb)

def run_papermill(nb, cwd, *params) -> tuple:
    "Run `papermill nbs/NB out.ipynb -p ...` in `cwd`: (CompletedProcess, the executed notebook's stream outputs as one text)."
    args = [x for k, v in params for x in ('-p', k, str(v))]
    r = subprocess.run([sys.executable, '-m', 'papermill', str(NBS/nb), 'out.ipynb', *args], cwd=cwd, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    nb_out = json.loads((Path(cwd)/'out.ipynb').read_text())
    streams = ''.join(''.join(o['text']) for c in nb_out['cells'] for o in c.get('outputs', []) if o['output_type'] == 'stream')
    return r, streams

def check_run(r, streams, epochs:int):
    bad = [l for l in r.stderr.splitlines() if re.search(r'parameter|unable to parse', l, re.I)]
    assert not bad, f'papermill warned about parameters: {bad}'
    assert [int(m[1]) for m in EPOCH_LINE.finditer(streams)] == list(range(epochs)), f'no line per epoch in the outputs:\n{streams[-3000:]}'

def test_papermill_finetune_progress(tiny_demo, tmp_path):
    "The guide's `papermill nbs/finetune.ipynb out.ipynb -p task circor_outcome` in a folder with data/downstream (tiny model, 2 epochs)."
    (tmp_path/'data').mkdir(); os.symlink(tiny_demo['downstream'], tmp_path/'data'/'downstream')
    r, streams = run_papermill('finetune.ipynb', tmp_path, ('task', 'circor_outcome'), ('epochs', 2), ('preset', 'tiny'))
    check_run(r, streams, 2)
    assert json.loads((tmp_path/'outputs'/'circor_outcome_papermill'/'final_metrics.json').read_text())['epochs_trained'] == 2

def test_papermill_pretrain_progress(tiny_demo, tmp_path):
    "The guide's `papermill nbs/pretrain.ipynb out.ipynb -p epochs 20`, with 2 short epochs of the tiny model, in a folder with data/processed."
    (tmp_path/'data').mkdir(); os.symlink(tiny_demo['processed'], tmp_path/'data'/'processed')
    r, streams = run_papermill('pretrain.ipynb', tmp_path, ('epochs', 2), ('preset', 'tiny'), ('max_steps_per_epoch', 2))
    check_run(r, streams, 2)
    assert (tmp_path/'checkpoints'/'pretrain'/'best_model.pt').exists()
