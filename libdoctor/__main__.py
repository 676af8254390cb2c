"""``python -m libdoctor``: the same command line as the ``libdoctor`` script."""
from .cli import main

main(prog_name="libdoctor")
