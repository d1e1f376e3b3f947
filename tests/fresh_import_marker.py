"""Appends the importing process's id to the file named by ``LLM4MP_IMPORT_PROBE`` (see tests/fresh_import_probe.py)."""

import os

with open(os.environ["LLM4MP_IMPORT_PROBE"], "a", encoding="utf-8") as _marks:
    _marks.write(f"{os.getpid()}\n")
