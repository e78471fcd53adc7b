"""Type aliases of the public signatures (used in annotations only)."""

import os
from typing import Union

from .activations import Activation
from .tables import Table

#: A file path.
PathLike = Union[str, os.PathLike]
#: Anything that names a table: a Table, a table file, an activation or its name/expression.
PhiLike = Union[str, Activation, Table, os.PathLike]
