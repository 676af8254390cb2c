"""libdoctor: a shared-library doctor for GPU machine-learning hosts."""
# Kept to Python 3.6's syntax: on CentOS/RHEL 7's python3 this line, not a SyntaxError deeper in, is what a user sees.
import sys

if sys.version_info < (3, 9):
    sys.exit("libdoctor needs Python 3.9 or newer (this is %d.%d): on CentOS/RHEL 7 use conda's python, or the "
             "one-file build libdoctor.pyz with any Python 3.9+" % sys.version_info[:2])

try:
    from ._version import __version__  # written by setuptools-scm from the git tag at install
except ImportError:  # a source tree that was never installed
    __version__ = "0.2.0+unknown"
