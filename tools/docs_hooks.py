"""MkDocs hooks for the pahcl site (mkdocs.yml names this file): nbdev's links made local, a table of contents that
leads to the headings as they are, and a link from each page to its notebook.

- nbdev links every backticked name to its docs at `doc_host + doc_baseurl` (settings.ini), by the page names of its
  Quarto site (`segment.html` for `06_segment.ipynb`); here they point at this site's own pages.
- nbdev also links names it has no docs for (private ones, `_TorchScan`): such a link, left with no heading to
  lead to, is made plain code again once every page is built.
- mkdocs-jupyter makes each page's table of contents from a Markdown copy of the notebook, whose anchors differ from
  the rendered headings' ids where a heading holds code or repeats; the contents are rebuilt from the page's headings.
"""
import re
from html import unescape
from pathlib import Path

from mkdocs.structure.toc import get_toc

CODE_LINK = re.compile(r'<a href="([\w.-]+\.html)#([^"]+)">(<code>[^<]*</code>)</a>')
IDS = re.compile(r'\bid="([^"]+)"')
HEADING = re.compile(r'<h([1-6])\b[^>]*\bid="([^"]+)"[^>]*>(.*?)</h\1>', re.S)


def _doc_url() -> str:
    from nbdev.config import get_config
    cfg = get_config()
    return cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/'


def _pages(files) -> dict:
    "nbdev's page name (the notebook's name less its number) -> this site's page."
    stems = sorted((Path(f.src_uri).stem for f in files if f.src_uri.endswith('.ipynb')), key=lambda s: s[0].isdigit())
    return {re.sub(r'^\d+[a-z]?_', '', s) + '.html': s + '.html' for s in stems}   # a chapter wins over a notebook of its name


def _notebook_link(html: str, page) -> str:
    "A line under the page's title linking to its source notebook (mkdocs-jupyter copies it beside the page)."
    if not page.file.src_uri.endswith('.ipynb'): return html
    name = Path(page.file.src_uri).name
    link = f'<p class="pahcl-notebook">Source: <a href="{name}"><code>nbs/{name}</code></a></p>'
    return re.sub(r'(</h1>)', lambda m: m[1] + link, html, count=1)


def _toc(html: str):
    "The table of contents of a rendered page: its headings, nested by level, each with the id it has."
    tokens, stack = [], []
    for level, hid, inner in HEADING.findall(html):
        name = unescape(re.sub(r'<[^>]+>', '', inner)).replace('¶', '').strip()
        tok = {'level': int(level), 'id': hid, 'name': name, 'html': name, 'data-toc-label': '', 'children': []}
        while stack and stack[-1]['level'] >= tok['level']: stack.pop()
        (stack[-1]['children'] if stack else tokens).append(tok)
        stack.append(tok)
    return get_toc(tokens)


def on_page_content(html, page, config, files):
    pages, base = _pages(files), re.escape(_doc_url())
    html = re.sub(base + r'([\w.-]+\.html)', lambda m: pages.get(m[1], m[0]), html)
    html = _notebook_link(html, page)
    page.toc = _toc(html)
    return html


def on_post_build(config):
    "Links to names that have no heading anywhere in the site become plain code."
    site = Path(config['site_dir'])
    pages = {p.name: p for p in site.glob('*.html')}
    ids = {name: set(IDS.findall(p.read_text(encoding='utf-8'))) for name, p in pages.items()}
    for p in pages.values():
        html = p.read_text(encoding='utf-8')
        new = CODE_LINK.sub(lambda m: m[0] if m[2] in ids.get(m[1], ()) or m[1] not in pages else m[3], html)
        if new != html: p.write_text(new, encoding='utf-8')
