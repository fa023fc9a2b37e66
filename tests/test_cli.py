"""The `pahcl` command line as a user meets it: the console script, `python -m pahcl`, help, config."""
import json, shutil, subprocess, sys
from pathlib import Path
import pytest
from pahcl.cli import build_parser, COMMANDS

def subcommands():
    p = build_parser()
    return sorted(next(a for a in p._actions if a.dest == 'command').choices)

def test_console_script_and_module_agree(pahcl):
    exe = shutil.which('pahcl', path=str(Path(sys.executable).parent))
    assert exe, 'the pahcl console script is not installed next to this python'
    a = subprocess.run([exe, 'config', '--task', 'pascal', '--json'], capture_output=True, text=True)
    b = pahcl('config', '--task', 'pascal', '--json')
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert json.loads(a.stdout) == json.loads(b.stdout)

@pytest.mark.parametrize('cmd', subcommands())
def test_every_subcommand_has_help(pahcl, cmd):
    r = pahcl(cmd, '--help')
    assert r.returncode == 0 and r.stdout.startswith(f'usage: pahcl {cmd}'), r.stderr

@pytest.mark.parametrize('what', [n.split()[1] for n in COMMANDS if n.startswith('bench ')])
def test_every_benchmark_has_help_with_only_its_flags(pahcl, what):
    r = pahcl('bench', what, '--help')
    assert r.returncode == 0 and r.stdout.startswith(f'usage: pahcl bench {what}'), r.stderr
    assert ('--budget-minutes' in r.stdout) == (what in ('quality', 'challenge')), r.stdout

def test_top_level_help_lists_subcommands(pahcl):
    r = pahcl('--help')
    assert r.returncode == 0
    for cmd in subcommands(): assert cmd in r.stdout

def test_no_subcommand_is_a_usage_error(pahcl):
    r = pahcl()
    assert r.returncode == 2 and 'usage: pahcl' in r.stderr

def test_config_circor_murmur(pahcl):
    r = pahcl('config', '--task', 'circor_murmur', '--json')
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg['downstream']['num_classes'] == 3
    assert cfg['downstream']['label_map'] == {'Present': 0, 'Absent': 1, 'Unknown': 2}
    assert list(cfg['downstream']['label_map'].values()) == [0, 1, 2]

@pytest.mark.parametrize('task,labels', [('circor_outcome', {'Normal': 0, 'Abnormal': 1}),
                                         ('physionet2016', {'normal': 0, 'abnormal': 1}),
                                         ('pascal', {'normal': 0, 'murmur': 1, 'extrasystole': 2})])
def test_config_task_label_maps(pahcl, task, labels):
    cfg = json.loads(pahcl('config', '--task', task, '--json').stdout)
    assert cfg['downstream']['label_map'] == labels and cfg['downstream']['num_classes'] == len(labels)
    assert cfg['task']['name'] == task

def test_set_learning_rate(pahcl):
    r = pahcl('config', '--task', 'circor_outcome', '--set', 'training.learning_rate=5e-4')
    assert r.returncode == 0, r.stderr
    assert 'learning_rate: 0.0005' in r.stdout
    cfg = json.loads(pahcl('config', '--task', 'circor_outcome', '--set', 'training.learning_rate=5e-4', '--json').stdout)
    assert cfg['training']['learning_rate'] == 5e-4 == cfg['downstream']['learning_rate']

@pytest.mark.parametrize('args,needle', [
    (['--set', 'training.learnig_rate=5e-4'], "'training.learnig_rate'"),
    (['--set', 'trainning.learning_rate=5e-4'], "did you mean 'training.learning_rate'"),
    (['--set', 'training.batch_size=big'], "'training.batch_size' must be an integer"),
    (['--set', 'evaluation.primary_metric=f2'], "'evaluation.primary_metric' must be one of"),
    (['--set', 'nokey'], 'expected KEY=VALUE'),
])
def test_bad_keys_exit_nonzero_naming_the_key(pahcl, args, needle):
    r = pahcl('config', '--task', 'circor_outcome', *args)
    assert r.returncode != 0
    assert needle in r.stderr and 'Traceback' not in r.stderr, r.stderr

def test_flags_override_user_file_which_overrides_task(pahcl, tmp_path):
    f = tmp_path/'my_config.yaml'
    f.write_text('downstream:\n  learning_rate: 5e-4\n  batch_size: 64\nevaluation:\n  primary_metric: accuracy\n')
    cfg = json.loads(pahcl('config', '--task', 'circor_outcome', '--config', f, '--json').stdout)
    assert (cfg['training']['learning_rate'], cfg['training']['batch_size']) == (5e-4, 64)
    assert cfg['evaluation']['primary_metric'] == 'accuracy'          # file beats the task's auroc
    cfg = json.loads(pahcl('config', '--task', 'circor_outcome', '--config', f, '--lr', '0.01',
                           '--batch-size', '8', '--epochs', '2', '--json').stdout)
    assert (cfg['training']['learning_rate'], cfg['training']['batch_size'], cfg['training']['num_epochs']) == (0.01, 8, 2)

def test_user_file_errors_name_the_file(pahcl, tmp_path):
    f = tmp_path/'bad.yaml'
    f.write_text('training:\n  use_amp: maybe\n')
    r = pahcl('config', '--config', f)
    assert r.returncode == 2 and str(f) in r.stderr and "'training.use_amp' must be a boolean" in r.stderr
    r = pahcl('config', '--config', tmp_path/'missing.yaml')
    assert r.returncode == 2 and 'config file not found' in r.stderr
    f.write_text('training: [1,\n')
    r = pahcl('config', '--config', f)
    assert r.returncode == 2 and 'not valid YAML' in r.stderr

@pytest.mark.parametrize('kind', ['finetune', 'pretrain', 'preprocess'])
def test_every_packaged_config_resolves(pahcl, kind):
    r = pahcl('config', '--kind', kind, '--json')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)['seed'] == 42
