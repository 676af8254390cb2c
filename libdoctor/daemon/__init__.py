"""Keeping a machine healthy over time: ``libdoctor watch`` and what runs beside it.

The watchdog loop (``watch``), its configuration (``config``), the Prometheus textfile
(``metrics``), systemd readiness (``sdnotify``) and units (``units``, shipped in
``data/systemd``), and the running framework processes (``ps``).
"""
