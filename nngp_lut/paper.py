"""The paper's settings, in one place: Lee et al., "Deep Neural Networks as Gaussian
Processes", ICLR 2018 (and its code, brain-research/nngp).

Every module that reproduces the paper reads its numbers from here: the Table 1 settings
and accuracies, the hyper-parameter grid of Section 3, the Figure 2 setting, the jitter
ladder and the subset seed of the paper's code, and the convention that each input is
standardised across its features.  Nothing here is a library default: the library's
defaults (no standardisation, for instance) are stated where they are used; the
reproductions (``nngp-lut predict`` with no ``--data``, ``bench/bench_table1.py``,
``bench/bench_cifar10.py``) pass these settings explicitly.
"""

#: Table 1, MNIST rows: (n_train, phi) -> (depth, weight_var, bias_var, test accuracy).
TABLE1_MNIST = {
    (1000, "relu"): (20, 1.45, 0.28, 0.9279), (1000, "tanh"): (20, 1.96, 0.62, 0.9266),
    (10000, "relu"): (7, 0.61, 0.07, 0.9765), (10000, "tanh"): (2, 1.62, 0.28, 0.9773),
    (50000, "relu"): (1, 0.10, 0.48, 0.9875), (50000, "tanh"): (1, 1.28, 0.00, 0.9879),
}
#: Table 1, CIFAR-10 rows, ReLU GP test accuracy by n_train (the paper's 45k is the 50k
#: training images minus a 5k validation set).  Their (depth, weight_var, bias_var) are not
#: copied here (not verified against the paper in this project): bench/bench_cifar10.py takes
#: them as --setting DEPTH-W-B.
TABLE1_CIFAR10_RELU_ACCURACY = {1000: 0.3608, 10000: 0.4780, 45000: 0.5566}
#: Section 3: the hyper-parameter grid (a:b:n is n evenly spaced values from a to b).
DEPTHS = (1, 2, 3, 5, 7, 10, 20, 50, 100)
WEIGHT_VAR_GRID = "0.1:5:30"
BIAS_VAR_GRID = "0:2:30"
#: Figure 2 (calibration): depth, weight_var, bias_var.
FIGURE2_SETTING = dict(depth=3, weight_var=2.0, bias_var=0.2)
#: The paper's code: noise variance 1e-10, multiplied by 10 after each failed Cholesky
#: factorisation, up to 0.1.
JITTERS = tuple(10.0 ** -e for e in range(10, 0, -1))
#: The paper's code: seed of the shuffle of class-balanced subsets.
SUBSET_SEED = 9999
#: The paper's code standardises each input across its features (mean 0, variance 1).
STANDARDIZE = True
#: The paper's MNIST split: validation = the first 10k of the 60k training images, train =
#: the other 50k, test = the 10k test images.
MNIST_N_VAL = 10000
#: Table 1, the best finite networks (trained with SGD on the squared loss) on MNIST 1k,
#: by activation: the "NN" rows.
TABLE1_MNIST_NN_1K = {"relu": 0.9252, "tanh": 0.9254}
