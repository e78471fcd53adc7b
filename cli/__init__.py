"""The ``nngp-lut`` command line (installed as ``nngp_lut.cli``): parsing, I/O, progress and
errors only; every number comes from the library."""
