"""Write the format-v1 table files kept in tests/data (run once, with the package version
that wrote them; the files are committed so that later versions are tested against them).

    python tests/data/make_v1_tables.py
"""

from pathlib import Path

from nngp_lut import build_table

HERE = Path(__file__).resolve().parent
#: Small grids: the files stay ~100 KB; their measured errors are stored in them.
GRIDS = {
    "erf": dict(variance_min=1e-3, variance_max=1e2, n_variance=32, n_angle=40, n_unequal=16,
                n_unequal_angle=24),
    "relu": dict(),
}

if __name__ == "__main__":
    for name, grid in GRIDS.items():
        table = build_table(name, **grid)
        out = HERE / f"{name}_format_v1.h5"
        table.save(out, force=True)
        print(out, out.stat().st_size, table.metadata["measured_error"])
