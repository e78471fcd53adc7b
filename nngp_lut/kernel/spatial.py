"""Layer-by-layer rules of the spatial layers (Conv, AvgPool, GlobalAvgPool, Flatten,
Aggregate) on kernel records with spatial axes: the slow, readable reference."""


def conv_apply(layer, k):
    raise NotImplementedError("Conv kernels are being written")


def avgpool_apply(layer, k):
    raise NotImplementedError("AvgPool kernels are being written")


def global_avgpool_apply(layer, k):
    raise NotImplementedError("GlobalAvgPool kernels are being written")


def flatten_apply(layer, k):
    raise NotImplementedError("Flatten kernels are being written")


def aggregate_apply(layer, k):
    raise NotImplementedError("Aggregate kernels are being written")
