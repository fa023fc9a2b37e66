"""`pahcl.download` against a local HTTP server (127.0.0.1, written here; never the internet):
verify + unpack into the readers' layout, resume, servers that ignore Range, checksum mismatches,
zip-slip / tar-slip, idempotence, no network, PASCAL's manual steps; and the checksum parser on the
real PhysioNet checksum files in ../shared/data when they are there."""
import hashlib, http.server, io, json, re, socket, tarfile, threading, zipfile
from contextlib import contextmanager
from pathlib import Path
import pytest
import pahcl.download as dl
from pahcl.download import DownloadError, download, extract_archive, fetch, parse_checksums, file_digest, MARKER

CIRCOR_ZIP = 'the-circor-digiscope-phonocardiogram-dataset-1.0.3.zip'
CIRCOR_TOP = 'the-circor-digiscope-phonocardiogram-dataset-1.0.3/'

# ---------------------------------------------------------------- a tiny mirror with Range support
class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_GET(self):
        srv, rng = self.server, self.headers.get('Range')
        f = srv.root/self.path.lstrip('/')
        if not f.is_file():
            srv.log.append((self.path, rng, 0)); return self.send_error(404)
        data, m = f.read_bytes(), re.fullmatch(r'bytes=(\d+)-', rng or '')
        if m and srv.ranges:
            start = int(m[1])
            if start >= len(data):
                srv.log.append((self.path, rng, 0)); self.send_response(416)
                self.send_header('Content-Range', f'bytes */{len(data)}'); self.end_headers(); return
            self.send_response(206); self.send_header('Content-Range', f'bytes {start}-{len(data)-1}/{len(data)}')
        else:
            start = 0; self.send_response(200)
        body = data[start:]
        self.send_header('Content-Length', str(len(body))); self.end_headers()
        cut = srv.cuts.pop(0) if srv.cuts and self.path.endswith('.zip') else None   # hang up after `cut` bytes
        sent = body[:cut]; srv.log.append((self.path, rng, len(sent)))  # logged before the client can finish reading
        self.wfile.write(sent)

@contextmanager
def serve(root, ranges=True, cuts=()):
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    srv.root, srv.ranges, srv.cuts, srv.log = Path(root), ranges, list(cuts), []
    threading.Thread(target=srv.serve_forever, kwargs=dict(poll_interval=0.02), daemon=True).start()
    try: yield srv, f'http://127.0.0.1:{srv.server_address[1]}'
    finally: srv.shutdown(); srv.server_close()

def zip_bytes_to(path, files):
    with zipfile.ZipFile(path, 'w') as z:
        for name, data in files.items(): z.writestr(zipfile.ZipInfo(name), data)
    return path

def tar_to(path, files, links={}, hardlinks={}):
    with tarfile.open(path, 'w:gz') as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
        for kind, table in ((tarfile.SYMTYPE, links), (tarfile.LNKTYPE, hardlinks)):
            for name, target in table.items():
                ti = tarfile.TarInfo(name); ti.type, ti.linkname = kind, target; t.addfile(ti)
    return path

def p16_files(n=40):
    "Training-set files of a miniature PhysioNet 2016 release: REFERENCE.csv, .wav and .hea per recording."
    out = {}
    for db in 'abcdef':
        out[f'training-{db}/REFERENCE.csv'] = ''.join(f'{db}{i:04d},{(-1, 1)[i % 2]}\n' for i in range(1, 3)).encode()
        for i in range(1, 3):
            out[f'training-{db}/{db}{i:04d}.wav'] = b'RIFF' + hashlib.sha256(f'{db}{i}'.encode()).digest() * n
            out[f'training-{db}/{db}{i:04d}.hea'] = f'{db}{i:04d} 1 2000 {n}\n'.encode()
    return out

def mirror_p16(www, algo='sha256', corrupt=False, wrap=''):
    d = www/'physionet2016'; d.mkdir(parents=True, exist_ok=True)
    z = zip_bytes_to(d/'training.zip', {wrap + k: v for k, v in p16_files().items()})
    digest = hashlib.new(algo, z.read_bytes()).hexdigest()
    if corrupt: digest = hashlib.new(algo, b'something else').hexdigest()
    (d/'SHA256SUMS.txt').write_text(f"{digest}  training.zip\n{hashlib.sha256(b'v').hexdigest()}  validation.zip\n")
    return z

def circor_files():
    f = {'training_data.csv': b'Patient ID,Recording locations:,Age,Murmur,Outcome\n2530,AV+PV,Child,Absent,Normal\n',
         'RECORDS': b'training_data/2530_AV\ntraining_data/2530_PV\n', 'LICENSE.txt': b'ODC-By 1.0\n',
         'training_data/2530.txt': b'2530 2 4000\n'}
    for loc in ('AV', 'PV'):
        f[f'training_data/2530_{loc}.wav'] = b'RIFF' + bytes(range(256)) * 20
        f[f'training_data/2530_{loc}.hea'] = f'2530_{loc} 1 4000 5120\n'.encode()
        f[f'training_data/2530_{loc}.tsv'] = b'0.0\t0.1\t1\n0.1\t0.3\t2\n'
    return f

def mirror_circor(www, tamper=None, extra={}):
    d = www/'circor'; d.mkdir(parents=True, exist_ok=True)
    files = circor_files()
    sums = ''.join(f'{hashlib.sha256(v).hexdigest()} {k}\n' for k, v in files.items())
    (d/'SHA256SUMS.txt').write_text(sums)
    inside = {**files, 'SHA256SUMS.txt': sums.encode(), **extra}
    if tamper: inside[tamper] = b'tampered'
    zip_bytes_to(d/CIRCOR_ZIP, {CIRCOR_TOP + k: v for k, v in inside.items()})
    return files

def archive_requests(srv): return [(p, r, n) for p, r, n in srv.log if p.endswith('.zip')]

@pytest.fixture(autouse=True)
def no_wait(monkeypatch): monkeypatch.setattr(dl, 'RETRY_WAIT', 0.0)

# ---------------------------------------------------------------- download, verify, unpack
@pytest.mark.parametrize('algo', ['sha256', 'md5'])
@pytest.mark.parametrize('wrap', ['', 'training/'])
def test_physionet2016_verified_and_unpacked(tmp_path, algo, wrap):
    z = mirror_p16(tmp_path/'www', algo, wrap=wrap)
    raw = tmp_path/'raw'
    with serve(tmp_path/'www') as (srv, url):
        rep = download('physionet2016', raw, base_url=url, progress=False)
    r = rep['physionet2016']
    assert r['status'] == 'downloaded' and r['path'] == str(raw/'physionet2016') and r['verified']
    assert r['bytes'] == z.stat().st_size + (tmp_path/'www'/'physionet2016'/'SHA256SUMS.txt').stat().st_size
    dest = raw/'physionet2016'
    assert sorted(p.name for p in dest.iterdir()) == [MARKER] + [f'training-{db}' for db in 'abcdef']
    for name, data in p16_files().items(): assert (dest/name).read_bytes() == data, name
    marker = json.loads((dest/MARKER).read_text())
    assert marker['checksum'] == f'{algo}:{file_digest(z, algo)}' and marker['version'] == '1.0.0'
    assert sorted(p.name for p in raw.iterdir()) == ['physionet2016']   # no archive, .part or staging left

def test_circor_members_verified_and_unpacked(tmp_path):
    files = mirror_circor(tmp_path/'www', extra={'index.html': b'<html>not in the checksum list</html>'})
    raw = tmp_path/'raw'
    with serve(tmp_path/'www') as (srv, url):
        r = download('circor', raw, base_url=url, progress=False)['circor']
    dest = raw/'circor'
    assert r['status'] == 'downloaded' and r['files'] == len(files)
    for name, data in files.items(): assert (dest/name).read_bytes() == data, name
    assert not (dest/'index.html').exists()                   # only what the published list vouches for
    assert (dest/'SHA256SUMS.txt').read_text() == (tmp_path/'www'/'circor'/'SHA256SUMS.txt').read_text()
    assert '10 files verified' in json.loads((dest/MARKER).read_text())['checksum']

# ---------------------------------------------------------------- resuming
def test_resume_requests_only_the_rest(tmp_path):
    z = mirror_p16(tmp_path/'www'); data = z.read_bytes(); half = len(data)//2
    raw = tmp_path/'raw'; (raw/'.downloads').mkdir(parents=True)
    (raw/'.downloads'/'training.zip.part').write_bytes(data[:half])
    with serve(tmp_path/'www') as (srv, url):
        r = download('physionet2016', raw, base_url=url, progress=False)['physionet2016']
    assert archive_requests(srv) == [('/physionet2016/training.zip', f'bytes={half}-', len(data) - half)]
    assert r['status'] == 'downloaded' and (raw/'physionet2016'/'training-f'/'REFERENCE.csv').is_file()

def test_dropped_connection_is_resumed(tmp_path):
    z = mirror_p16(tmp_path/'www'); n = z.stat().st_size
    with serve(tmp_path/'www', cuts=[1000, 3000]) as (srv, url):
        r = download('physionet2016', tmp_path/'raw', base_url=url, progress=False)['physionet2016']
    assert archive_requests(srv) == [('/physionet2016/training.zip', None, 1000),
                                     ('/physionet2016/training.zip', 'bytes=1000-', 3000),
                                     ('/physionet2016/training.zip', 'bytes=4000-', n - 4000)]
    assert r['status'] == 'downloaded'

def test_giving_up_keeps_the_partial_file(tmp_path):
    mirror_p16(tmp_path/'www')
    with serve(tmp_path/'www', cuts=[500] * (dl.RETRIES + 1)) as (srv, url):
        with pytest.raises(DownloadError, match='run the same command again to resume') as e:
            download('physionet2016', tmp_path/'raw', base_url=url, progress=False)
    part = tmp_path/'raw'/'.downloads'/'training.zip.part'
    assert part.stat().st_size == 500 * (dl.RETRIES + 1) and str(part) in str(e.value)
    assert not (tmp_path/'raw'/'physionet2016').exists()
    with serve(tmp_path/'www') as (srv, url):                 # the next run picks up where it stopped
        assert download('physionet2016', tmp_path/'raw', base_url=url, progress=False)['physionet2016']['status'] == 'downloaded'
    assert archive_requests(srv)[0][1] == f'bytes={500 * (dl.RETRIES + 1)}-'

def test_server_ignoring_range_restarts(tmp_path):
    z = mirror_p16(tmp_path/'www'); data = z.read_bytes()
    raw = tmp_path/'raw'; (raw/'.downloads').mkdir(parents=True)
    (raw/'.downloads'/'training.zip.part').write_bytes(data[:100])
    with serve(tmp_path/'www', ranges=False) as (srv, url):
        r = download('physionet2016', raw, base_url=url, progress=False)['physionet2016']
    assert archive_requests(srv) == [('/physionet2016/training.zip', 'bytes=100-', len(data))]
    assert r['status'] == 'downloaded'                        # not appended: the checksum would have failed

def test_complete_partial_file_gets_416_and_is_used(tmp_path):
    z = mirror_p16(tmp_path/'www')
    raw = tmp_path/'raw'; (raw/'.downloads').mkdir(parents=True)
    (raw/'.downloads'/'training.zip.part').write_bytes(z.read_bytes())
    with serve(tmp_path/'www') as (srv, url):
        r = download('physionet2016', raw, base_url=url, progress=False)['physionet2016']
    assert archive_requests(srv) == [('/physionet2016/training.zip', f'bytes={z.stat().st_size}-', 0)]
    assert r['status'] == 'downloaded' and r['bytes'] == (tmp_path/'www'/'physionet2016'/'SHA256SUMS.txt').stat().st_size

def test_fetch_plain(tmp_path):
    (tmp_path/'www').mkdir(); (tmp_path/'www'/'x.bin').write_bytes(b'abc' * 1000)
    with serve(tmp_path/'www') as (srv, url):
        assert fetch(f'{url}/x.bin', tmp_path/'x.bin', progress=False) == 3000
        with pytest.raises(DownloadError, match='HTTP 404'): fetch(f'{url}/nope.bin', tmp_path/'y.bin', progress=False)
    assert (tmp_path/'x.bin').read_bytes() == b'abc' * 1000 and not (tmp_path/'y.bin').exists()

# ---------------------------------------------------------------- checksums
def test_archive_checksum_mismatch_refused(tmp_path):
    mirror_p16(tmp_path/'www', corrupt=True)
    with serve(tmp_path/'www') as (srv, url):
        with pytest.raises(DownloadError) as e: download('physionet2016', tmp_path/'raw', base_url=url, progress=False)
    msg = str(e.value)
    want = hashlib.sha256(b'something else').hexdigest()
    got = file_digest(tmp_path/'www'/'physionet2016'/'training.zip')
    assert 'checksum mismatch for training.zip' in msg and f'expected {want}, got {got}' in msg and 'was removed' in msg
    assert not (tmp_path/'raw'/'physionet2016').exists()
    assert list((tmp_path/'raw'/'.downloads').iterdir()) == []
    assert not list((tmp_path/'raw').glob('.physionet2016.staging-*'))

def test_member_checksum_mismatch_refused(tmp_path):
    mirror_circor(tmp_path/'www', tamper='training_data/2530_PV.wav')
    with serve(tmp_path/'www') as (srv, url):
        with pytest.raises(DownloadError) as e: download('circor', tmp_path/'raw', base_url=url, progress=False)
    msg = str(e.value)
    assert f"training_data/2530_PV.wav: sha256 expected {hashlib.sha256(circor_files()['training_data/2530_PV.wav']).hexdigest()}" in msg
    assert f'got {hashlib.sha256(b"tampered").hexdigest()}' in msg and 'archive was removed' in msg
    assert not (tmp_path/'raw'/'circor').exists()

def test_parse_checksums_formats():
    s, m = hashlib.sha256(b'a').hexdigest(), hashlib.md5(b'a').hexdigest()
    assert parse_checksums(f'{s} a/b.wav\n{m} *c.zip\nSHA256 (d e) = {s.upper()}\n') == \
        {'a/b.wav': ('sha256', s), 'c.zip': ('md5', m), 'd e': ('sha256', s)}
    with pytest.raises(DownloadError, match=r'MD5SUMS, line 2: not a checksum line'): parse_checksums(f'{m} x\nbad line', 'MD5SUMS')

def test_real_physionet_checksum_files_parse_and_match(shared_data):
    for sums_file, folder in [(shared_data/'circor2022'/'SHA256SUMS.txt', shared_data/'circor2022'),
                              (shared_data/'physionet2016'/'training-b'/'MD5SUMS', shared_data/'physionet2016'/'training-b'),
                              (shared_data/'physionet2016'/'training-b'/'SHA256SUMS', shared_data/'physionet2016'/'training-b')]:
        if not sums_file.is_file(): pytest.skip(f'{sums_file} not present')
        sums = parse_checksums(sums_file.read_text(), str(sums_file))
        assert len(sums) > 100
        for name in sorted(sums)[:5]:
            algo, want = sums[name]
            assert file_digest(folder/name, algo) == want, name

# ---------------------------------------------------------------- unsafe archives
@pytest.mark.parametrize('bad, why', [('/etc/cron.d/evil', 'absolute path'), ('C:\\evil.bat', 'absolute path'),
                                      (CIRCOR_TOP + '../../evil.sh', "climbs out of the target folder with '..'"),
                                      ('training_data/..\\..\\evil', "'..'")])
def test_zip_slip_refused(tmp_path, bad, why):
    z = zip_bytes_to(tmp_path/'a.zip', {CIRCOR_TOP + 'training_data.csv': b'x', bad: b'pwned'})
    with pytest.raises(DownloadError, match=re.escape(f'member {bad!r}')) as e:
        extract_archive(z, tmp_path/'out', anchor='training_data.csv')
    assert why in str(e.value) and not (tmp_path/'out').exists()

def test_zip_slip_refused_through_download(tmp_path):
    mirror_circor(tmp_path/'www', extra={'../../../evil.sh': b'pwned'})
    with serve(tmp_path/'www') as (srv, url):
        with pytest.raises(DownloadError, match=re.escape(f"member '{CIRCOR_TOP}../../../evil.sh'")):
            download('circor', tmp_path/'raw', base_url=url, progress=False)
    assert not (tmp_path/'raw'/'circor').exists() and not list(tmp_path.rglob('evil.sh'))

def test_zip_symlink_escaping_refused(tmp_path):
    zi = zipfile.ZipInfo('training_data/link'); zi.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(tmp_path/'l.zip', 'w') as z:
        z.writestr('training_data.csv', b'x'); z.writestr(zi, '/etc')
    with pytest.raises(DownloadError, match="symbolic link to '/etc'"): extract_archive(tmp_path/'l.zip', tmp_path/'out')

@pytest.mark.parametrize('links, hardlinks, files, why', [
    ({'training-a/up': '../../outside'}, {}, {}, "symbolic link to '../../outside', which leaves the target folder"),
    ({'training-a/abs': '/home'}, {}, {}, "symbolic link to '/home'"),
    ({'training-a/sub': 'x'}, {}, {'training-a/sub/evil': b'x'}, "lies beneath the symbolic link 'training-a/sub'"),
    ({}, {'training-a/shadow': '/etc/shadow'}, {}, "hard link to '/etc/shadow'"),
    ({}, {'training-a/h': '../elsewhere'}, {}, "hard link to '../elsewhere'"),
])
def test_tar_slip_refused(tmp_path, links, hardlinks, files, why):
    t = tar_to(tmp_path/'t.tar.gz', {'training-a/REFERENCE.csv': b'a0001,-1\n', **files}, links, hardlinks)
    with pytest.raises(DownloadError, match=re.escape(why)): extract_archive(t, tmp_path/'out', anchor='training-a/REFERENCE.csv')
    assert not (tmp_path/'out').exists()

def test_tar_links_inside_are_kept(tmp_path):
    t = tar_to(tmp_path/'t.tar.gz', {'training/training-a/REFERENCE.csv': b'a0001,-1\n'},
               links={'training/training-a/ref.csv': 'REFERENCE.csv'},
               hardlinks={'training/training-a/copy.csv': 'training/training-a/REFERENCE.csv'})
    got = extract_archive(t, tmp_path/'out', anchor='training-a/REFERENCE.csv')
    assert got == ['training-a/REFERENCE.csv', 'training-a/copy.csv', 'training-a/ref.csv']
    assert (tmp_path/'out'/'training-a'/'ref.csv').is_symlink() and (tmp_path/'out'/'training-a'/'copy.csv').read_text() == 'a0001,-1\n'

def test_not_an_archive(tmp_path):
    (tmp_path/'x.zip').write_text('<html>503</html>')
    with pytest.raises(DownloadError, match='neither a zip nor a tar archive'): extract_archive(tmp_path/'x.zip', tmp_path/'o')

# ---------------------------------------------------------------- idempotence, force, existing folders
def test_second_run_downloads_nothing(tmp_path):
    mirror_p16(tmp_path/'www'); mirror_circor(tmp_path/'www')
    raw = tmp_path/'raw'
    with serve(tmp_path/'www') as (srv, url):
        first = download('all', raw, base_url=url, progress=False)
        n = len(srv.log)
        second = download('all', raw, base_url=url, progress=False)
        assert len(srv.log) == n == 4                         # two checksum lists + two archives, then nothing
        third = download('physionet2016', raw, base_url=url, force=True, progress=False)
        assert len(srv.log) == n + 2
    assert [r['status'] for r in first.values()] == ['downloaded', 'downloaded', 'manual']
    assert [r['status'] for r in second.values()] == ['already present', 'already present', 'manual']
    assert all(r['bytes'] == 0 for r in second.values())
    assert third['physionet2016']['status'] == 'downloaded' and (raw/'physionet2016'/'training-a'/'REFERENCE.csv').is_file()
    assert not list(raw.glob('.physionet2016.*'))

def test_copy_unpacked_by_hand_is_present(tmp_path):
    dest = tmp_path/'raw'/'circor'; dest.mkdir(parents=True); (dest/'training_data.csv').write_text('Patient ID\n')
    with serve(tmp_path) as (srv, url):
        r = download('circor', tmp_path/'raw', base_url=url, progress=False)['circor']
    assert r == dict(status='already present', path=str(dest), bytes=0, verified=False) and srv.log == []

def test_unrelated_folder_is_not_overwritten(tmp_path):
    mirror_circor(tmp_path/'www')
    dest = tmp_path/'raw'/'circor'; dest.mkdir(parents=True); (dest/'notes.txt').write_text('mine')
    with serve(tmp_path/'www') as (srv, url):
        with pytest.raises(DownloadError, match=r'has no training_data.csv.*force=True'):
            download('circor', tmp_path/'raw', base_url=url, progress=False)
        assert srv.log == []                                  # refused before downloading anything
        download('circor', tmp_path/'raw', base_url=url, force=True, progress=False)
    assert (dest/'training_data.csv').is_file() and not (dest/'notes.txt').exists()

# ---------------------------------------------------------------- errors and PASCAL
def test_no_network_says_how_to_download_by_hand(tmp_path):
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    with pytest.raises(DownloadError) as e:
        download('physionet2016', tmp_path/'raw', base_url=f'http://127.0.0.1:{port}', progress=False)
    msg = str(e.value)
    assert 'could not be reached' in msg and 'https://physionet.org/files/challenge-2016/1.0.0/training.zip' in msg
    assert str(tmp_path/'raw'/'physionet2016'/'training-a'/'REFERENCE.csv') in msg

def test_http_error_is_reported(tmp_path):
    (tmp_path/'www').mkdir()
    with serve(tmp_path/'www') as (srv, url):
        with pytest.raises(DownloadError, match=r'circor: The download failed: HTTP 404 .*SHA256SUMS.txt'):
            download('circor', tmp_path/'raw', base_url=url, progress=False)

def test_pascal_is_manual_and_all_goes_on(tmp_path, capsys):
    mirror_p16(tmp_path/'www')                                # circor is missing on this mirror
    with serve(tmp_path/'www') as (srv, url):
        with pytest.raises(DownloadError, match='circor: The download failed: HTTP 404') as e:
            download('all', tmp_path/'raw', base_url=url, progress=False)
    reports = e.value.reports
    assert reports['physionet2016']['status'] == 'downloaded' and reports['pascal']['status'] == 'manual'
    out = capsys.readouterr().out
    assert 'no stable download address' in out and str(tmp_path/'raw'/'pascal') in out
    assert 'set_a.csv' in reports['pascal']['instructions'] and 'Atraining_' in reports['pascal']['instructions']

@pytest.mark.parametrize('layout', [['set_b.csv'], ['set_a/a.wav'], ['Btraining_normal/normal__103_1305031931979_B.wav']])
def test_pascal_unpacked_by_hand_is_present(tmp_path, layout):
    for f in layout:
        p = tmp_path/'raw'/'pascal'/f; p.parent.mkdir(parents=True, exist_ok=True); p.write_bytes(b'RIFF')
    assert download('pascal', tmp_path/'raw', progress=False)['pascal']['status'] == 'already present'

def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'circor2022'; choose one of circor, physionet2016, pascal"):
        download('circor2022', tmp_path)

def test_full_disk_while_unpacking_keeps_the_verified_archive(tmp_path, monkeypatch):
    mirror_p16(tmp_path/'www'); raw = tmp_path/'raw'
    def full(*a, **k): raise OSError(28, 'No space left on device')
    with serve(tmp_path/'www') as (srv, url):
        with monkeypatch.context() as m:
            m.setattr(dl.shutil, 'copyfileobj', full)
            with pytest.raises(DownloadError, match=r'unpacking into .* failed: .*No space left on device.*archive is kept'):
                download('physionet2016', raw, base_url=url, progress=False)
        assert (raw/'.downloads'/'training.zip').is_file() and not (raw/'physionet2016').exists()
        assert not list(raw.glob('.physionet2016.staging-*'))
        n = len(archive_requests(srv))
        r = download('physionet2016', raw, base_url=url, progress=False)['physionet2016']
        assert r['status'] == 'downloaded' and len(archive_requests(srv)) == n   # the kept archive is re-verified, not re-fetched
