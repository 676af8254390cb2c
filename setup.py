"""Metadata lives in setup.cfg and pyproject.toml; this file only turns an old Python away in one line."""
import sys

if sys.version_info < (3, 9):
    sys.exit("libdoctor needs Python 3.9 or newer (this is %d.%d): on CentOS/RHEL 7 use conda's python, or the "
             "one-file build libdoctor.pyz with any Python 3.9+" % sys.version_info[:2])

from setuptools import setup  # noqa: E402

setup()
