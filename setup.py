"""Packaging for pahcl, read from settings.ini (nbdev 2 layout).

CPU:  pip install torch==2.13.0 --no-deps --index-url https://download.pytorch.org/whl/cpu && pip install -e ".[dev]"
      (the CPU torch first: on Linux, PyPI's torch is the CUDA build)
GPU:  pip install -e ".[dev]" && pip install --no-build-isolation -e ".[cuda]"
"""
from configparser import ConfigParser
import setuptools, shlex

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

expected = ('version description keywords author author_email license user git_url '
            'lib_name lib_path min_python requirements dev_requirements').split()
for o in expected: assert o in cfg, f"missing expected setting: {o}"

licenses = {'apache2': 'Apache-2.0'}  # SPDX identifier (setuptools deprecates licence classifiers)
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable',
            '6 - Mature', '7 - Inactive']
py_versions = ['3.10', '3.11', '3.12']

lic = licenses[cfg['license'].lower()]
min_python = cfg['min_python']
req = lambda key: shlex.split(cfg.get(key, ''))

setuptools.setup(
    name=cfg['lib_name'],
    license=lic,
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title(),
                 'Topic :: Scientific/Engineering :: Medical Science Apps.'] +
                ['Programming Language :: Python :: ' + v for v in py_versions],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=['pahcl', 'pahcl.*']),
    include_package_data=True,
    package_data={'pahcl': ['configs/*.yaml', 'configs/tasks/*.yaml', 'assets/*', 'csrc/*.cpp', 'weights/*']},
    install_requires=req('requirements'),
    extras_require={'dev': req('dev_requirements'), 'cuda': req('cuda_requirements')},
    dependency_links=cfg.get('dep_links', '').split(),
    python_requires=f'>={min_python},<3.13',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(),
                  'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']},
    version=cfg['version'], description=cfg['description'], keywords=cfg['keywords'],
    author=cfg['author'], author_email=cfg['author_email'],
)
