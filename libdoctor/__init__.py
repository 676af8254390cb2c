"""libdoctor: a shared-library doctor for GPU machine-learning hosts."""

__version__ = "0.1.0"
