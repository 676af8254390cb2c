"""Sphinx configuration: ``python -m sphinx -W -b html docs docs/_build`` (the tests build it, warnings as errors)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from libdoctor import __version__  # noqa: E402

project = "libdoctor"
author = "The libdoctor authors"
copyright = "2026, The libdoctor authors"  # noqa: A001 - Sphinx's name
release = version = __version__
extensions: list = []
root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
