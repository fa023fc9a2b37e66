"""The docs site in a real browser: headless Chromium (Debian's package) driven by Playwright.

The site is the one at $PAHCL_DOCS_SITE (CI builds it with `python tools/build_docs.py`, every notebook run),
or one built here with `--no-execute` (the notebooks' stored outputs). It is served on 127.0.0.1 and checked
as a reader would use it: the index renders with text, a plot and the sidebar; the sidebar reaches every chapter;
a search finds a word from chapter 3; no local link or anchor on any page is broken. Screenshots of the index and
of chapter 3 go to $PAHCL_SCREENSHOTS, or the test's temporary folder.

Skips when Chromium or Playwright is missing, unless PAHCL_REQUIRE_BROWSER=1 (as in CI), where it fails instead.
"""
import functools, http.server, os, re, shutil, subprocess, sys, threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit, unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']
CHAPTERS = sorted(p.stem for p in (ROOT/'nbs').glob('[0-9][0-9]*_*.ipynb'))
CHAPTER_3 = next(c for c in CHAPTERS if c.startswith('03_'))


def _need(ok: bool, why: str):
    if ok: return
    if os.environ.get('PAHCL_REQUIRE_BROWSER') == '1': pytest.fail(f'{why} (PAHCL_REQUIRE_BROWSER=1)')
    pytest.skip(why)


@pytest.fixture(scope='module')
def site(tmp_path_factory) -> Path:
    "The built site's folder."
    if os.environ.get('PAHCL_DOCS_SITE'): return Path(os.environ['PAHCL_DOCS_SITE']).resolve()
    out = tmp_path_factory.mktemp('site')
    subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), '--no-execute', '--out', str(out)], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope='module')
def url(site):
    "The site served on 127.0.0.1."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    handler = functools.partial(Quiet, directory=str(site))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown(); srv.server_close()


@pytest.fixture(scope='module')
def browser():
    _need(CHROMIUM is not None, 'no Chromium (Debian: apt-get install chromium)')
    try: from playwright.sync_api import sync_playwright
    except ImportError: _need(False, 'no Playwright (pip install playwright)')
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={'width': 1400, 'height': 1000})
    yield pg
    pg.close()


def shots(tmp_path) -> Path:
    d = Path(os.environ.get('PAHCL_SCREENSHOTS') or tmp_path); d.mkdir(parents=True, exist_ok=True)
    return d


class _Refs(HTMLParser):
    "The local links (`href`, `src`) and the anchors (any `id`, an `<a>`'s `name`) of one HTML page."
    def __init__(self):
        super().__init__(); self.links, self.ids = [], set()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.ids.update(v for k, v in a.items() if v and (k == 'id' or (k == 'name' and tag == 'a')))
        for k in ('href', 'src'):
            v = a.get(k)
            if v and not re.match(r'^(\w[\w+.-]*:|//)', v): self.links.append(v)


def _refs(path: Path, cache: dict) -> _Refs:
    if path not in cache: cache[path] = _Refs(); cache[path].feed(path.read_text(encoding='utf-8', errors='replace'))
    return cache[path]


def test_no_broken_local_link(site):
    "Every local link of every page names a file of the site, and every anchor an id of its page."
    cache, broken, pages = {}, [], sorted(site.rglob('*.html'))
    assert len(pages) >= len(CHAPTERS)
    for page in pages:
        for link in _refs(page, cache).links:
            parts = urlsplit(link)
            path = unquote(parts.path)
            target = ((site/path.lstrip('/')) if path.startswith('/') else (page.parent/path)).resolve() if path else page
            if target.is_dir(): target = target/'index.html'
            if not target.is_file(): broken.append(f'{page.relative_to(site)}: {link} (no file)'); continue
            if parts.fragment and target.suffix == '.html' and unquote(parts.fragment) not in _refs(target, cache).ids:
                broken.append(f'{page.relative_to(site)}: {link} (no anchor)')
    assert not broken, f'{len(broken)} broken links:\n' + '\n'.join(broken[:30])


def test_index_renders_with_sidebar(page, url, tmp_path):
    "The index shows its title, text, a plot and the sidebar; a screenshot of it and of chapter 3 is kept."
    page.goto(f'{url}/index.html')
    assert page.locator('article h1').first.inner_text().strip() == 'pahcl'
    assert 'phonocardiogram' in page.locator('article').inner_text().lower()
    imgs = page.locator('article img')
    assert imgs.count() >= 1 and imgs.first.evaluate('i => i.complete && i.naturalWidth > 100')
    assert page.locator('nav.md-nav--primary').first.is_visible()
    d = shots(tmp_path)
    page.screenshot(path=str(d/'index.png'))
    page.goto(f'{url}/{CHAPTER_3}.html')
    assert page.locator('article h1').first.inner_text().startswith('3.')
    plot = page.locator('article img').first
    assert plot.evaluate('i => i.complete && i.naturalWidth > 100')
    plot.scroll_into_view_if_needed()
    page.screenshot(path=str(d/'chapter3.png'))
    assert (d/'index.png').stat().st_size > 10_000 and (d/'chapter3.png').stat().st_size > 10_000


def test_sidebar_reaches_every_chapter(page, url):
    "Every chapter has a sidebar link, in chapter order, opening a page with its title and a link to its notebook."
    page.goto(f'{url}/index.html')
    hrefs = page.locator('nav.md-nav--primary a.md-nav__link[href$=".html"]').evaluate_all('as => as.map(a => a.getAttribute("href"))')
    stems = [Path(urlsplit(h).path).stem for h in hrefs]
    chapters = [s for s in dict.fromkeys(stems) if s in CHAPTERS]
    assert chapters == CHAPTERS, f'sidebar chapters {chapters}'
    for stem in CHAPTERS:
        page.goto(f'{url}/{stem}.html')
        assert page.locator('article h1').count() >= 1, stem
        assert page.locator(f'article a[href="{stem}.ipynb"]').count() >= 1, f'{stem}: no link to its notebook'
        assert page.locator(f'nav.md-nav--primary a.md-nav__link--active[href$="{stem}.html"]').count() >= 1, stem


def test_search_finds_chapter_3(page, url):
    "A word from chapter 3 (the downloads) typed into the search box lists chapter 3 among the results."
    page.goto(f'{url}/index.html')
    box = page.locator('input.md-search__input')
    box.click(); box.fill('resumable')
    page.wait_for_selector('.md-search-result__item', timeout=20_000)
    hrefs = page.locator('.md-search-result__item a').evaluate_all('as => as.map(a => a.getAttribute("href"))')
    assert any(CHAPTER_3 in h for h in hrefs), hrefs
