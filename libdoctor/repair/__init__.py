"""The only code that writes to the machine: applying the changes the diagnosis chose, and taking them back.

Applying, journalling and undoing (``fixer``; ``fix`` applies a report's choice), the state folder and
its lock (``statedir``) and the conda activation and ``bert-serving-start`` hooks (``hooks``).  What
to change and how safe it is are the diagnosis's (``rules/``); every file is written through
``libdoctor.files``.  May import ``loader/``, ``gpu/``, ``rules/`` and ``targets``.
"""
