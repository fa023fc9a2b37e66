"""Untrusted files on the data side: crafted zip and tar archives that try to write outside the
target folder are refused before anything is written (absolute paths, `..`, links leaving the folder,
members beneath a link, devices and pipes); a download is verified against its checksums before a single
member is unpacked; and task CSV paths cannot lead out of the task folder (`..`, absolute, symbolic links)."""
import hashlib, io, shutil, stat, tarfile, warnings, zipfile
from pathlib import Path
import pytest
import pahcl.download as dl
from pahcl.download import DownloadError, download, extract_archive
from pahcl.data import DataError, read_split
from test_download import serve, mirror_p16, mirror_circor

def make_zip(path, files=(), symlinks=()):
    "A zip with `files` (name, bytes) written verbatim and zip symlinks (name, target), as Info-ZIP stores them."
    with zipfile.ZipFile(path, 'w') as z:
        for name, data in files: z.writestr(zipfile.ZipInfo(name), data)
        for name, target in symlinks:
            zi = zipfile.ZipInfo(name); zi.external_attr = (stat.S_IFLNK | 0o777) << 16; z.writestr(zi, target)
    return path

def make_tar(path, members):
    "A tar.gz of `members`: (name, type, data-or-linkname)."
    with tarfile.open(path, 'w:gz') as t:
        for name, kind, payload in members:
            ti = tarfile.TarInfo(name); ti.type = kind
            if kind == tarfile.REGTYPE: ti.size = len(payload); t.addfile(ti, io.BytesIO(payload))
            else:
                if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE): ti.linkname = payload
                t.addfile(ti)
    return path

OK = ('data/REFERENCE.csv', b'a0001,-1\n')
F, SYM, HARD = tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
ZIPS = [
    ('absolute path', [OK, ('/tmp/pahcl-evil', b'x')], [], 'it has an absolute path'),
    ('.. path', [OK, ('data/../../pahcl-evil', b'x')], [], "climbs out of the target folder with '..'"),
    ('Windows drive', [OK, ('C:\\evil.bat', b'x')], [], 'absolute path'),
    ('backslash ..', [OK, ('data\\..\\..\\evil', b'x')], [], "'..'"),
    ('symlink to an absolute path', [OK], [('data/etc', '/etc')], "symbolic link to '/etc', which leaves"),
    ('symlink climbing out', [OK], [('data/up', '../../..')], 'which leaves the target folder'),
    ('file beneath a symlink', [OK, ('data/sub/evil', b'x')], [('data/sub', 'inner')], "lies beneath the symbolic link 'data/sub'"),
]
TARS = [
    ('absolute path', [(OK[0], F, OK[1]), ('/tmp/pahcl-evil', F, b'x')], 'it has an absolute path'),
    ('.. path', [(OK[0], F, OK[1]), ('../pahcl-evil', F, b'x')], "'..'"),
    ('symlink out', [(OK[0], F, OK[1]), ('data/home', SYM, '../../../home')], 'symbolic link'),
    ('absolute symlink', [(OK[0], F, OK[1]), ('data/root', SYM, '/')], "symbolic link to '/'"),
    ('hard link out', [(OK[0], F, OK[1]), ('data/passwd', HARD, '/etc/passwd')], "hard link to '/etc/passwd'"),
    ('hard link climbing', [(OK[0], F, OK[1]), ('data/x', HARD, '../outside')], 'hard link'),
    ('file through a symlink', [(OK[0], F, OK[1]), ('data/lnk', SYM, 'sub'), ('data/lnk/evil', F, b'x')], 'lies beneath the symbolic link'),
    ('hard link to a link', [(OK[0], F, OK[1]), ('data/lnk', SYM, 'REFERENCE.csv'), ('data/h', HARD, 'data/lnk')], 'not a file unpacked with it'),
    ('character device', [(OK[0], F, OK[1]), ('data/tty', tarfile.CHRTYPE, None)], 'device, pipe or other special file'),
    ('fifo', [(OK[0], F, OK[1]), ('data/pipe', tarfile.FIFOTYPE, None)], 'device, pipe or other special file'),
]

def _nothing_written(tmp_path, dest):
    assert not dest.exists(), 'something was unpacked'
    assert not (tmp_path/'pahcl-evil').exists() and not Path('/tmp/pahcl-evil').exists()

@pytest.mark.parametrize('what,files,links,why', ZIPS, ids=[z[0] for z in ZIPS])
def test_crafted_zip_refused(tmp_path, what, files, links, why):
    z = make_zip(tmp_path/'x.zip', files, links)
    with pytest.raises(DownloadError, match='refusing') as e: extract_archive(z, tmp_path/'out'/'dest', anchor='REFERENCE.csv')
    assert why in str(e.value) and 'Nothing was extracted' in str(e.value), str(e.value)
    _nothing_written(tmp_path, tmp_path/'out'/'dest')

@pytest.mark.parametrize('what,members,why', TARS, ids=[t[0] for t in TARS])
def test_crafted_tar_refused(tmp_path, what, members, why):
    t = make_tar(tmp_path/'x.tar.gz', members)
    with pytest.raises(DownloadError, match='refus') as e: extract_archive(t, tmp_path/'out'/'dest', anchor='REFERENCE.csv')
    assert why in str(e.value), str(e.value)
    assert not (tmp_path/'out'/'dest').exists() or not any((tmp_path/'out'/'dest').rglob('*'))
    _nothing_written(tmp_path, tmp_path/'nowhere')

def test_links_inside_the_folder_are_fine(tmp_path):
    t = make_tar(tmp_path/'ok.tar.gz', [(OK[0], F, OK[1]), ('data/ref.csv', SYM, 'REFERENCE.csv'), ('data/copy.csv', HARD, 'data/REFERENCE.csv')])
    assert extract_archive(t, tmp_path/'out', anchor='REFERENCE.csv') == ['REFERENCE.csv', 'copy.csv', 'ref.csv']
    assert (tmp_path/'out'/'ref.csv').read_bytes() == OK[1] and (tmp_path/'out'/'ref.csv').is_symlink()

@pytest.fixture
def spy(monkeypatch):
    "Record every call of extract_archive made by download."
    calls, real = [], dl.extract_archive
    def wrapped(*a, **kw): calls.append(a[0]); return real(*a, **kw)
    monkeypatch.setattr(dl, 'extract_archive', wrapped)
    return calls

def test_checksum_mismatch_stops_before_unpacking(tmp_path, spy):
    mirror_p16(tmp_path/'www', corrupt=True)
    with serve(tmp_path/'www') as (srv, url):
        with pytest.raises(DownloadError, match='checksum mismatch for training.zip'):
            download('physionet2016', tmp_path/'raw', base_url=url, progress=False)
    assert spy == [] and not (tmp_path/'raw'/'physionet2016').exists()
    assert not list((tmp_path/'raw').glob('.physionet2016.staging-*'))

def test_member_checksum_mismatch_stops_before_unpacking(tmp_path, spy):
    mirror_circor(tmp_path/'www', tamper='training_data/2530_AV.wav')
    with serve(tmp_path/'www') as (srv, url):
        with pytest.raises(DownloadError, match='2530_AV.wav'):
            download('circor', tmp_path/'raw', base_url=url, progress=False)
    assert spy == [] and not (tmp_path/'raw'/'circor').exists()

def test_verified_download_is_unpacked_once_checked(tmp_path, spy):
    z = mirror_p16(tmp_path/'www')
    with serve(tmp_path/'www') as (srv, url):
        rep = download('physionet2016', tmp_path/'raw', base_url=url, progress=False)['physionet2016']
    assert rep['verified'] and rep['checksum'] == 'sha256:' + hashlib.sha256(z.read_bytes()).hexdigest()
    assert len(spy) == 1 and (tmp_path/'raw'/'physionet2016'/'training-a'/'REFERENCE.csv').is_file()

def test_slip_member_with_a_valid_checksum_is_still_refused(tmp_path):
    mirror_circor(tmp_path/'www', extra={'../../evil.sh': b'rm -rf ~'})
    with serve(tmp_path/'www') as (srv, url):
        with pytest.raises(DownloadError, match=r"refusing to unpack archive member .*\.\./\.\./evil\.sh"):
            download('circor', tmp_path/'raw', base_url=url, progress=False)
    assert not (tmp_path/'raw'/'circor').exists() and not (tmp_path/'evil.sh').exists()

# ------------------------------------------------------------------ task CSV paths stay inside the task folder
@pytest.fixture(scope='module')
def task(tmp_path_factory):
    from pahcl.demo_data import make_physionet2016
    from pahcl.preprocess import preprocess
    from pahcl.tasks import prepare
    root = tmp_path_factory.mktemp('task')
    make_physionet2016(root/'raw'/'physionet2016', n_records={'training-a': (3, 3, (4, 5))}, seed=2)
    preprocess(root/'raw', root/'processed', num_workers=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); prepare('physionet2016', root/'raw', root/'processed', root/'down')
    return root/'down'/'physionet2016'

def _with_path(task, dst, value):
    shutil.copytree(task, dst, symlinks=True)
    lines = (dst/'train.csv').read_text().split('\n')
    lines[2] = value + lines[2][lines[2].index(','):]
    (dst/'train.csv').write_text('\n'.join(lines))
    return dst

@pytest.mark.parametrize('value', ['../../processed/physionet2016/x.npy', '/etc/passwd', 'train/../../x.npy', 'train/out/x.npy'])
def test_task_csv_paths_cannot_escape(task, tmp_path, value):
    t = _with_path(task, tmp_path/'t', value)
    if value.startswith('train/out'): (t/'train'/'out').symlink_to(task.parent.parent/'processed')   # a link inside that leads out
    with pytest.raises(DataError, match=r"train.csv: row 1 \(of 1 such rows\) points outside the task folder"):
        read_split(t, 'train')
    assert len(read_split(task, 'train')[0])                                                     # the intact task still reads
