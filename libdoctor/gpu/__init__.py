"""What GPU frameworks, CUDA and the NVIDIA driver are, read from files and never imported.

Frameworks and what they were built for (``frameworks``), per-framework verdicts
(``frameworkcheck``), the CUDA soname and wheel tables (``cudatable``), the driver (``driver``) and
``scan --probe`` (``probe``).  The CUDA, cuDNN, TensorFlow and driver tables ship beside them in
``data/``.  Builds on ``loader`` and on target discovery (``targets``, ``candidates``).
"""
