"""The only code that writes to the machine: repair plans, their grading and applying them.

The fix pipeline (``fix``), grading proposals by resolving again (``verify``), applying,
journalling and undoing (``fixer``), the state folder and its lock (``statedir``) and the conda
activation and ``bert-serving-start`` hooks (``hooks``).
"""
