"""``python -m nngp_lut.cli``: the same as the nngp-lut command."""

from .main import main

main()
