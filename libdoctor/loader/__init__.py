"""The model of glibc's dynamic loader (``ld.so``) and of the files it reads.

ELF facts (``elffacts``, ``symbols``), ``/etc/ld.so.cache`` (``ldcache``), ``ld.so.conf``
(``ldconf``), the loader's own facts (``loaderinfo``), the Environment value a resolution runs in
(``environment``), what the loader sees on disk (``fsview``), search strings and dynamic string
tokens (``searchpath``), the search itself (``resolver``), the facts cache (``factstore``) and small
files read safely without blocking (``plainfiles``).

It is pure: it never writes to the machine (its own caches aside: ``factstore``'s facts and
``loaderinfo``'s probe), never prints, and imports nothing of libdoctor outside this package but
``errors`` and ``logs``: no GPU knowledge, rules, repairs, daemon or front end
(``tests/test_layout.py`` walks the imports).
"""
