"""JupyterLab, as the README opens it (`jupyter lab nbs/`): the dev extra installs it with the widget manager that
the explorer notebook's sliders and buttons need, and a server started on the notebooks serves the lab and the
explorer. (The explorer's callbacks themselves are tested headless in the notebook.)
"""
import json, os, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).parent/'jupyter'


def test_widget_manager_is_a_lab_extension():
    "ipywidgets' JupyterLab extension is installed and enabled, so widgets render in the lab, not as text."
    out = subprocess.run([str(JUPYTER), 'labextension', 'list'], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    line = next((l for l in text.splitlines() if '@jupyter-widgets/jupyterlab-manager' in l), '')
    assert 'enabled' in line and 'OK' in line, text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _get(url: str, wait: float = 60.0) -> bytes:
    end = time.time() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r: return r.read()
        except OSError:
            if time.time() > end: raise
            time.sleep(0.5)


def test_lab_serves_the_notebooks(tmp_path):
    "`jupyter lab nbs/` starts, serves the lab page, and hands out the explorer notebook with its widgets' code."
    port = _free_port()
    cmd = [str(JUPYTER), 'lab', '--no-browser', f'--port={port}', '--ip=127.0.0.1', '--IdentityProvider.token=',
           '--ServerApp.password=', '--allow-root', f'--ServerApp.root_dir={ROOT/"nbs"}']
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp_path/'lab.log', 'w'),
                            env={**os.environ, 'JUPYTER_RUNTIME_DIR': str(tmp_path/'rt')})
    try:
        assert b'JupyterLab' in _get(f'http://127.0.0.1:{port}/lab')
        nb = json.loads(_get(f'http://127.0.0.1:{port}/api/contents/explore.ipynb'))
        assert nb['type'] == 'notebook'
        assert any('ipywidgets' in ''.join(c['source']) for c in nb['content']['cells'])
    finally:
        proc.terminate()
        try: proc.wait(timeout=30)
        except subprocess.TimeoutExpired: proc.kill()
    if proc.returncode not in (0, -15, 143): pytest.fail((tmp_path/'lab.log').read_text()[-2000:])
