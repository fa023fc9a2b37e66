"""Build the docs pages without Quarto: nbdev's notebook processing, then nbconvert to HTML.

    python tools/build_docs.py      # writes _docs/<notebook>.html, one page per notebook in nbs/

With Quarto installed, `nbdev_docs` builds the full site from `nbs/_quarto.yml` instead. Quarto cannot
be installed offline (its wheel downloads a binary), and `nbdev_proc_nbs` insists on installing it, so
this runs the same steps as `nbdev_proc_nbs` (config files, module index, sidebar, processed notebooks
in `_proc/`) minus the Quarto check, and renders every processed notebook with nbconvert. Any error,
or a notebook without a page, exits non-zero.
"""
import shutil, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def main() -> int:
    import os; os.chdir(ROOT)
    from nbdev.config import get_config
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.doclinks import _build_modidx
    from nbdev.serve import proc_nbs
    from nbconvert import HTMLExporter
    import nbformat
    cfg = get_config()
    refresh_quarto_yml()
    _build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    proc = Path(proc_nbs(cfg.nbs_path, n_workers=0, force=True))
    out = ROOT/cfg.doc_path.name
    shutil.rmtree(out, ignore_errors=True); out.mkdir()
    exporter = HTMLExporter()
    sources = sorted(p for p in cfg.nbs_path.glob('*.ipynb'))
    for src in sources:
        nb = nbformat.read(proc/src.name, as_version=4)
        html, _ = exporter.from_notebook_node(nb, resources={'metadata': {'name': src.stem}})
        (out/f'{src.stem}.html').write_text(html, encoding='utf-8')
        print(f'{src.name} -> {out.name}/{src.stem}.html')
    missing = [s.name for s in sources if not (out/f'{s.stem}.html').exists()]
    if missing: print(f'no page for: {missing}', file=sys.stderr); return 1
    print(f'{len(sources)} pages in {out.relative_to(ROOT)}/')
    return 0

if __name__ == '__main__': sys.exit(main())
