"""Build the docs site from the notebooks: run them, process them with nbdev, render them with MkDocs.

    python tools/build_docs.py               # _docs/index.html and one page per notebook in nbs/
    python tools/build_docs.py --no-execute  # keep the outputs stored in the notebooks (quicker)
    python tools/build_docs.py --out DIR     # write the site to DIR instead of _docs/
    python tools/build_docs.py --proc-only   # only nbdev's processed notebooks in _proc/ (Quarto's pre-render)

The site has a sidebar in chapter order (index, chapters, the notebooks you run, results), full-text search,
every chapter's plots and tables (each notebook is run afresh in a copy of `nbs/`, so they are current), the API
of each module as nbdev's `show_doc` renders it, and a link from every page to its source notebook.

Why MkDocs: Quarto, nbdev's own renderer, cannot be installed offline (its wheel downloads a binary), so CI
builds with mkdocs-material (sidebar, search and a clean theme with no extra code) and mkdocs-jupyter (which
renders notebooks, outputs included, with nbconvert). The steps before rendering are nbdev's: the module index,
`show_doc` for every exported name, directives removed. With Quarto, `quarto render` from the top uses
`_quarto.yml` instead. Any failing cell, or a notebook without a page, exits non-zero.
"""
import argparse, re, shutil, sys, tempfile
from pathlib import Path

from make_readme import _directives                         # nbdev's `#| key: value` cell options, read once

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {'results': 'Results', 'explore': 'Notebooks to run', 'finetune': 'Notebooks to run',
            'pretrain': 'Notebooks to run'}


def run_notebook(path: str):
    "Run the notebook at `path` in its own folder, as `nbdev_test` does, and save it with its outputs."
    import os
    from execnb.shell import CaptureShell
    os.chdir(Path(path).parent)
    CaptureShell(path=Path(path).parent, mpl_format='png').execute(path, path, exc_stop=True)


def run_notebooks(nbs: Path, workers: int = 2):
    "Run every notebook in the folder `nbs`, each in a fresh Python process, `workers` at a time."
    import subprocess
    from concurrent.futures import ThreadPoolExecutor
    def one(path):
        r = subprocess.run([sys.executable, __file__, '--run', path], capture_output=True, text=True)
        if r.returncode: raise RuntimeError(f'{Path(path).name}: a cell failed\n{r.stdout[-3000:]}{r.stderr[-3000:]}')
        return Path(path).name
    with ThreadPoolExecutor(workers) as ex:
        for name in ex.map(one, sorted(str(p) for p in nbs.glob('*.ipynb'))): print(f'ran {name}', flush=True)


def process(nbs: Path) -> Path:
    "nbdev's steps before rendering (config files, module index, sidebar, processed notebooks); returns `_proc/`."
    from nbdev.config import get_config
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.doclinks import _build_modidx
    from nbdev.serve import proc_nbs
    import warnings; warnings.filterwarnings('ignore', message='Found cells containing imports')
    cfg = get_config()
    refresh_quarto_yml()
    _build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    return Path(proc_nbs(nbs, n_workers=0, force=True))


def _heading(src: Path) -> str:
    "The first cell of the source notebook `src` (its `# title` and `> description`), which nbdev turns into front matter."
    import nbformat
    cells = [c for c in nbformat.read(src, as_version=4).cells if c.cell_type == 'markdown']
    return cells[0].source if cells and cells[0].source.startswith('# ') else ''


def _local_links(text: str) -> str:
    "Links to notebooks (`X.ipynb`, `nbs/X.ipynb`) made links to their pages (`X.html`)."
    return re.sub(r'\]\((?:\./)?(?:nbs/)?([\w.-]+)\.ipynb(#[^)]*)?\)', lambda m: f']({m[1]}.html{m[2] or ""})', text)


def _source_links(text: str, notebook: str) -> str:
    "`show_doc`'s source links (to the module on a code host, with Quarto attributes) made links to `notebook`."
    return re.sub(r'\[source\]\([^)]*\)(\{[^}]*\})?', f'[source]({notebook})', text)


def tidy(nb, heading: str, notebook: str):
    "Make nbdev's processed `notebook` read as a page: its `heading`, no directives, hidden inputs hidden."
    cells = []
    for c in nb.cells:
        if c.cell_type == 'raw' and c.source.startswith('---'): c.cell_type, c.source = 'markdown', heading
        if c.cell_type == 'markdown': c.source = _local_links(c.source)
        if c.cell_type == 'code':
            opts = _directives(c.source)
            if opts.get('include') == 'false': continue
            if opts.get('echo') == 'false': c.metadata.setdefault('tags', []).append('remove_input')
            if opts.get('output') == 'false': c.outputs = []
            c.source = re.sub(r'^#\|.*\n?', '', c.source, flags=re.M)
            for o in c.outputs:
                md = o.get('data', {}).get('text/markdown')
                if md: o['data']['text/markdown'] = _source_links(md, notebook)
        cells.append(c)
    nb.cells = cells
    return nb


def _title(nb, default: str) -> str:
    "The text of the notebook's first heading."
    for c in nb.cells:
        m = c.cell_type == 'markdown' and re.search(r'^#\s+(.+)$', c.source, re.M)
        if m: return m[1].replace('`', '').strip()
    return default


def nav(proc: Path, titles: dict) -> list:
    "The sidebar: the notebooks in nbdev's sidebar order, chapters first, then the sections of SECTIONS."
    import yaml
    order = yaml.safe_load((ROOT/'nbs'/'sidebar.yml').read_text())['website']['sidebar']['contents']
    items, sections = [], {}
    for name in order:
        page = {'Overview' if name == 'index.ipynb' else titles[name]: name}
        stem = Path(name).stem
        if stem in SECTIONS: sections.setdefault(SECTIONS[stem], []).append(page)
        else: items.append(page)
    return items + [{k: v} for k, v in sections.items()]


def render(proc: Path, out: Path):
    "Tidy every processed notebook in `proc` and build the MkDocs site into `out`."
    import nbformat
    from mkdocs.config import load_config
    from mkdocs.commands.build import build
    titles = {}
    for p in sorted(proc.glob('*.ipynb')):
        nb = tidy(nbformat.read(p, as_version=4), _heading(ROOT/'nbs'/p.name), p.name)
        titles[p.name] = _title(nb, p.stem)
        nbformat.write(nb, p)
    cfg = load_config(str(ROOT/'mkdocs.yml'), docs_dir=str(proc), site_dir=str(out.resolve()), nav=nav(proc, titles))
    build(cfg)
    missing = [n for n in titles if not (out/f'{Path(n).stem}.html').exists()]
    if missing: raise SystemExit(f'no page for: {missing}')
    print(f'{len(titles)} pages in {out}/')


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', type=Path, default=ROOT/'_docs', help='folder for the site (default _docs/)')
    ap.add_argument('--no-execute', action='store_true', help="render the notebooks' stored outputs")
    ap.add_argument('--proc-only', action='store_true', help="stop after nbdev's processed notebooks in _proc/")
    ap.add_argument('--run', help=argparse.SUPPRESS)                  # one notebook, in this process
    args = ap.parse_args(argv)
    if args.run: run_notebook(args.run); return 0
    import os; os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        nbs = Path(tmp)/'nbs'
        shutil.copytree(ROOT/'nbs', nbs, ignore=shutil.ignore_patterns('data', 'outputs', '.ipynb_checkpoints', 'kernel-*'))
        if not (args.no_execute or args.proc_only): run_notebooks(nbs)
        proc = process(nbs)
    if not args.proc_only: render(proc, args.out)
    return 0

if __name__ == '__main__': sys.exit(main())
