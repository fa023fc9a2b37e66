"""Write README.md from nbs/index.ipynb, without Quarto.

    python tools/make_readme.py            # write README.md (and README_files/ for images)
    python tools/make_readme.py --check    # exit 1 if README.md is not what index.ipynb gives
    python3 tools/make_readme.py --command setup|test   # print the README's setup / test command

nbdev 2's `nbdev_readme` needs Quarto, which cannot be installed offline. This does the same job
with nbconvert: cells marked `#| hide` are dropped, `#| echo: false` keeps only the output,
`#| output: false` keeps only the code, and every `#|` directive line is removed.
`--command` reads README.md with the standard library only, so CI can run it before installing.
"""
import re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README, INDEX = ROOT/'README.md', ROOT/'nbs'/'index.ipynb'
HEADER = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n"

def _directives(src):
    d = {}
    for line in src.splitlines():
        m = re.match(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*)$', line)
        if m: d[m.group(1)] = m.group(2).strip().lower()
    return d

def render() -> tuple:
    "Markdown text and extracted images of index.ipynb, with nbdev's cell directives applied."
    import nbformat
    from nbconvert import MarkdownExporter
    nb = nbformat.read(INDEX, as_version=4)
    cells = []
    for cell in nb.cells:
        d = _directives(cell.source)
        if 'hide' in d or 'default_exp' in d: continue
        cell.source = '\n'.join(l for l in cell.source.splitlines() if not re.match(r'^\s*#\|', l)).strip('\n')
        if cell.cell_type == 'code':
            if d.get('output') == 'false': cell.outputs = []
            if d.get('echo') == 'false': cell.metadata.setdefault('tags', []).append('remove_input')
            if not cell.outputs and (not cell.source or d.get('echo') == 'false'): continue
        cells.append(cell)
    nb.cells = cells
    from traitlets.config import Config
    c = Config(); c.TagRemovePreprocessor.enabled = True; c.TagRemovePreprocessor.remove_input_tags = {'remove_input'}
    exporter = MarkdownExporter(config=c)
    exporter.exclude_input_prompt = exporter.exclude_output_prompt = True
    body, res = exporter.from_notebook_node(nb, resources={'output_files_dir': 'README_files'})
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    return HEADER + body, res.get('outputs', {})

def commands(text:str) -> dict:
    "The README's first two bash blocks: {'setup': ..., 'test': ...}."
    blocks = re.findall(r'```bash\n(.*?)```', text, re.S)
    if len(blocks) < 2: raise SystemExit('README.md: expected the setup and test commands as its first two ```bash blocks')
    return {'setup': blocks[0].strip(), 'test': blocks[1].strip()}

def main(argv):
    if argv[:1] == ['--command']:
        print(commands(README.read_text(encoding='utf-8'))[argv[1]]); return 0
    text, images = render()
    if argv[:1] == ['--check']:
        old = README.read_text(encoding='utf-8') if README.exists() else ''
        stale = [n for n, data in images.items() if not (ROOT/n).exists() or (ROOT/n).read_bytes() != data]
        if old != text or stale:
            print('README.md is out of date with nbs/index.ipynb: run `.venv/bin/python tools/make_readme.py` and commit it.', file=sys.stderr)
            return 1
        print('README.md is up to date.'); return 0
    README.write_text(text, encoding='utf-8')
    for name, data in images.items():
        (ROOT/name).parent.mkdir(parents=True, exist_ok=True); (ROOT/name).write_bytes(data)
    print(f'wrote {README.relative_to(ROOT)}' + (f' and {len(images)} image(s)' if images else ''))
    return 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
