"""NNGP and NTK kernels of any network of layers, from F_phi tables.

The package shows the split of the work:

    record.py     the kernel record (NNGP, NTK, both diagonals) that layers map
    spatial.py    inputs with spatial axes, per-position factors, window geometry
    layers.py     the layer algebra: each layer's rule (apply) and its ops (lower)
    compiler.py   a network compiled into ops for the fused engine (_core/engine.py)
    executor.py   tiling, memory budget, HDF5 streaming and progress around any kernel
    network.py    Network (fused and layer-by-layer kernels) and the public functions

References
----------
Lee et al., "Deep Neural Networks as Gaussian Processes", ICLR 2018, eq. (5).
Jacot et al., "Neural Tangent Kernel", NeurIPS 2018, Theorem 1.
Novak et al., "Neural Tangents: Fast and Easy Infinite Neural Networks in Python", ICLR 2020.
"""

from .layers import (GRU, LSTM, Activation, Aggregate, ArchitectureError, AvgPool, BatchNorm,
                     Conv, Dense, Dropout, FanInConcat, FanInSum, FanOut, Flatten,
                     GlobalAvgPool, Identity, LastStep, Layer, LayerNorm, PositionalEmbedding,
                     SelfAttention, SimpleRNN, parallel, repeat, serial)
from .network import DEFAULT_MEMORY, Network, deep_network, nngp_diag, nngp_kernel, ntk_kernel
from .record import Kernels

__all__ = ["DEFAULT_MEMORY", "GRU", "LSTM", "Activation", "Aggregate", "ArchitectureError",
           "AvgPool", "BatchNorm", "Conv", "Dense", "Dropout", "FanInConcat", "FanInSum",
           "FanOut", "Flatten", "GlobalAvgPool", "Identity", "Kernels", "LastStep", "Layer",
           "LayerNorm", "Network", "PositionalEmbedding", "SelfAttention", "SimpleRNN",
           "deep_network", "nngp_diag", "nngp_kernel", "ntk_kernel", "parallel", "repeat",
           "serial"]
