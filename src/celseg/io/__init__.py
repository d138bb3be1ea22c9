"""Guarded file I/O: image reading with a size limit, atomic writes, output-path checks."""
