"""What every layer of the engine shares: the config (``config.toml`` + overrides, parsed once into
frozen objects), the error family and its exit codes, logging set-up, and the cost of a fill.

Imports nothing from the rest of ``engine``.
"""
