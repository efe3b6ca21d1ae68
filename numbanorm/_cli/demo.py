"""``python -m numbanorm demo``: batch norm lets a sigmoid network train at a high rate.

Small networks written in plain NumPy, with numbanorm's layers as their
normalization, are trained with plain SGD on scikit-learn's bundled 8x8
digits: at small scale, the classic from-scratch experiment of a
batch-normalized sigmoid LeNet trained at learning rate 1.0.  Without
normalization the same network, seed and rate stall; layer and group norm
run in the same table for comparison.
"""

import copy
import time

import numba
import numba.core.event
import numpy as np

from .. import BatchNorm, GroupNorm, LayerNorm, recompute_stats

MODELS = ("lenet", "mlp")
NORMS = ("none", "batch", "layer", "group")
DTYPE = np.float32  # of the data, the parameters and the gradients


def _import_extras():
    """``(sklearn.datasets, matplotlib.pyplot, tqdm)``, with a clear error when missing."""
    try:
        import matplotlib
        import sklearn.datasets
        import tqdm
    except ImportError as error:
        raise ImportError(
            f"the demo needs scikit-learn, matplotlib and tqdm ({error}): install the "
            f'"examples" extra (pip install ".[examples]" in a numbanorm clone) or '
            f"pip install scikit-learn matplotlib tqdm"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return sklearn.datasets, plt, tqdm.tqdm


# ----------------------------------------------------------------------------
# Plain NumPy layers, with the protocol of numbanorm's layers


class _Layer:
    """Base of the demo's layers, with the protocol of numbanorm's layers.

    Subclasses define ``forward`` and ``backward``; those with parameters
    also ``parameters`` and ``grads``.
    """

    def __init__(self):
        self.grads = {}
        self.training = True

    def __call__(self, x):
        return self.forward(x)

    def parameters(self):
        return {}

    def zero_grad(self):
        for grad in self.grads.values():
            grad[...] = 0

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)


class Linear(_Layer):
    """``x @ weight + bias``, initialized as PyTorch does: U(±1/sqrt(fan_in))."""

    def __init__(self, n_in, n_out, rng):
        super().__init__()
        bound = 1 / np.sqrt(n_in)
        self.weight = rng.uniform(-bound, bound, (n_in, n_out)).astype(DTYPE)
        self.bias = rng.uniform(-bound, bound, n_out).astype(DTYPE)
        self.grads = {name: np.zeros_like(p) for name, p in self.parameters().items()}

    def parameters(self):
        return {"weight": self.weight, "bias": self.bias}

    def forward(self, x):
        self._x = x
        return x @ self.weight + self.bias

    def backward(self, dy):
        self.grads["weight"] += self._x.T @ dy
        self.grads["bias"] += dy.sum(axis=0)
        return dy @ self.weight.T


class Conv2d(Linear):
    """3x3 convolution with zero padding 1, as a matrix product of im2col patches.

    The output is NCHW-shaped with channels-last strides (the matrix product's
    layout), which numbanorm's layers read in place.
    """

    def __init__(self, channels_in, channels_out, rng):
        super().__init__(channels_in * 9, channels_out, rng)

    def forward(self, x):
        n, c, h, w = x.shape
        padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
        patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, c * 9)
        y = super().forward(patches)
        return y.reshape(n, h, w, -1).transpose(0, 3, 1, 2)

    def backward(self, dy):
        n, _, h, w = dy.shape
        dpatches = super().backward(dy.transpose(0, 2, 3, 1).reshape(n * h * w, -1))
        dpatches = dpatches.reshape(n, h, w, -1, 3, 3)
        dpadded = np.zeros((n, dpatches.shape[3], h + 2, w + 2), DTYPE)
        for i in range(3):
            for j in range(3):
                dpadded[:, :, i : i + h, j : j + w] += dpatches[..., i, j].transpose(0, 3, 1, 2)
        return dpadded[:, :, 1:-1, 1:-1]


class AvgPool2d(_Layer):
    """2x2 average pooling with stride 2."""

    def forward(self, x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))

    def backward(self, dy):
        return np.repeat(np.repeat(dy, 2, axis=2), 2, axis=3) / 4


class Sigmoid(_Layer):
    def forward(self, x):
        # The tanh form does not overflow for large |x|.
        self._y = 0.5 + 0.5 * np.tanh(0.5 * x)
        return self._y

    def backward(self, dy):
        return dy * self._y * (1 - self._y)


class Flatten(_Layer):
    def forward(self, x):
        self._shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dy):
        return dy.reshape(self._shape)


class Sequential(_Layer):
    """Layers applied in order; backward runs them in reverse."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def train(self, mode=True):
        for layer in self.layers:
            layer.train(mode)
        return super().train(mode)

    def zero_grad(self):
        for layer in self.layers:
            layer.zero_grad()

    def sgd_step(self, lr):
        """Plain SGD: every parameter moves against its gradient, in place."""
        for layer in self.layers:
            for name, param in layer.parameters().items():
                param -= lr * layer.grads[name]


def _norm_layer(norm, shape):
    """The normalization after a layer whose output has ``shape`` (without the batch axis).

    Returns None for ``"none"``.  Layer norm normalizes each sample over
    all of ``shape``; group norm uses groups of two channels on conv maps and
    four groups of features on dense layers.
    """
    channels = shape[0]
    if norm == "none":
        return None
    if norm == "batch":
        return BatchNorm(channels, dtype=DTYPE)
    if norm == "layer":
        return LayerNorm(shape, dtype=DTYPE)
    if norm == "group":
        groups = channels // 2 if len(shape) > 1 else 4
        return GroupNorm(groups, channels, dtype=DTYPE)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def build_network(model, norm, rng):
    """A sigmoid classifier of 8x8 digits: ``"lenet"`` or ``"mlp"``, with ``norm`` layers.

    LeNet as in the batch-normalization LeNet of Dive into Deep Learning,
    scaled to 8x8 input: (conv 3x3, norm, sigmoid, 2x2 average pool) twice,
    then (dense, norm, sigmoid) twice and a dense output layer.  The MLP has
    four (dense, norm, sigmoid) blocks of 128, 128, 120 and 84 units.
    """

    def block(layer, shape):
        norm_layer = _norm_layer(norm, shape)
        return [layer] + ([norm_layer] if norm_layer is not None else []) + [Sigmoid()]

    if model == "lenet":
        layers = (
            block(Conv2d(1, 6, rng), (6, 8, 8))
            + [AvgPool2d()]
            + block(Conv2d(6, 16, rng), (16, 4, 4))
            + [AvgPool2d(), Flatten()]
            + block(Linear(64, 120, rng), (120,))
            + block(Linear(120, 84, rng), (84,))
        )
    elif model == "mlp":
        layers = [Flatten()]
        for n_in, n_out in ((64, 128), (128, 128), (128, 120), (120, 84)):
            layers += block(Linear(n_in, n_out, rng), (n_out,))
    else:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    return Sequential(layers + [Linear(84, 10, rng)])


# ----------------------------------------------------------------------------
# Data, training and evaluation


def load_digits(seed=0, test_size=0.2):
    """scikit-learn's 8x8 digits as ``(x_train, y_train, x_test, y_test)``.

    Images are ``(N, 1, 8, 8)`` float32 in [0, 1]; the split is stratified
    and fixed by ``seed``.
    """
    datasets, _, _ = _import_extras()
    from sklearn.model_selection import train_test_split

    digits = datasets.load_digits()
    images = (digits.images / 16.0).astype(DTYPE)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=test_size, random_state=seed, stratify=digits.target
    )
    return x_train, y_train, x_test, y_test


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient with respect to ``logits``."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1
    return -log_probs[rows, labels].mean(), grad / len(labels)


def accuracy(network, x, labels):
    """Fraction of ``x`` classified correctly, in evaluation mode."""
    network.eval()
    predictions = network(x).argmax(axis=1)
    network.train()
    return float((predictions == labels).mean())


def train(model, norm, lr, data, *, epochs=10, batch_size=32, seed=0, progress=None, batches=None):
    """Train one network with plain SGD; returns the network and its history.

    Parameters
    ----------
    model, norm : str
        As in :func:`build_network`.
    lr : float
        Learning rate.
    data : tuple
        ``(x_train, y_train, x_test, y_test)``.
    epochs, batch_size, seed : int, optional
        ``seed`` fixes the initialization and the batch order, so runs that
        differ only in ``norm`` or ``lr`` see the same batches.
    progress : callable, optional
        Wraps the range of epochs (``tqdm``) and gets a ``set_postfix``
        call per epoch.
    batches : int, optional
        At most this many batches an epoch; all by default.

    Returns
    -------
    network : Sequential
    history : dict
        Per epoch: ``loss`` (mean training loss), ``train_acc`` and
        ``test_acc`` (evaluation mode, after the epoch), and for a network
        with batch norm ``exact_test_acc`` (see :func:`exact_stats_accuracy`).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    x_train, y_train, x_test, y_test = data
    rng = np.random.default_rng(seed)
    network = build_network(model, norm, rng)
    history = {"loss": [], "train_acc": [], "test_acc": []}
    if any(isinstance(layer, BatchNorm) for layer in network.layers):
        history["exact_test_acc"] = []
    epoch_range = range(epochs) if progress is None else progress(range(epochs))
    for _ in epoch_range:
        order = rng.permutation(len(x_train))
        losses = []
        # The last partial batch is dropped: batch norm needs more than one sample.
        starts = range(0, len(order) - batch_size + 1, batch_size)[:batches]
        for start in starts:
            batch = order[start : start + batch_size]
            loss, dlogits = cross_entropy(network(x_train[batch]), y_train[batch])
            network.zero_grad()
            network.backward(dlogits)
            network.sgd_step(lr)
            losses.append(loss)
        history["loss"].append(float(np.mean(losses)))
        history["train_acc"].append(accuracy(network, x_train, y_train))
        history["test_acc"].append(accuracy(network, x_test, y_test))
        if "exact_test_acc" in history:
            history["exact_test_acc"].append(exact_stats_accuracy(network, x_train, x_test, y_test))
        if progress is not None:
            epoch_range.set_postfix(
                {
                    name: f"{values[-1]:.3f}"
                    for name, values in history.items()
                    if name != "train_acc"
                }
            )
    return network, history


def exact_stats_accuracy(network, x_train, x_test, y_test):
    """Test accuracy with every batch norm's running averages replaced by the exact
    statistics of ``x_train``, in a copy: ``network`` goes on with its averages."""
    exact = copy.deepcopy(network)
    recompute_network_stats(exact, x_train)
    return accuracy(exact, x_test, y_test)


def recompute_network_stats(network, x):
    """Replace every batch norm's running statistics by the exact ones over ``x``.

    The layers are processed from the input on, each fed by the network
    before it in evaluation mode, in batches of 256.
    """
    network.eval()
    for index, layer in enumerate(network.layers):
        if isinstance(layer, BatchNorm):
            before = Sequential(network.layers[:index])
            batches = (x[start : start + 256] for start in range(0, len(x), 256))
            recompute_stats(layer, batches, forward=before)
    network.train()


# ----------------------------------------------------------------------------
# The command


def run_demo(
    *,
    epochs=10,
    lrs=(1.0, 0.1),
    models=MODELS,
    norms=NORMS,
    batch_size=64,
    seed=0,
    output="numbanorm-demo.png",
):
    """Train every (model, norm, lr), print a table of accuracies and plot the curves.

    For batch norm the table also gives the test accuracy after
    :func:`recompute_stats` replaced the running averages with the exact
    statistics of the training set.

    Returns
    -------
    list of dict
        One row per run: ``model``, ``norm``, ``lr``, ``history`` and the
        final accuracies.
    """
    _, plt, tqdm = _import_extras()
    data = load_digits(seed)
    # Batches of 64 small images are far too small to split between threads:
    # a parallel launch would cost more than it saves, and much more when
    # other processes share the cores.
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        compile_kernels(lambda: _first_steps(data, models, norms, lrs[0], batch_size))
        start = time.perf_counter()
        runs = [
            _run(model, norm, lr, data, epochs, batch_size, seed, tqdm)
            for model in models
            for lr in lrs
            for norm in norms
        ]
        seconds = time.perf_counter() - start
    finally:
        numba.set_num_threads(threads)
    print(format_table(runs))
    print(f"\n{len(runs)} runs of {epochs} epochs in {seconds:.1f} s")
    plot(runs, output, plt)
    print(f"plot: {output}")
    return runs


class _CompileNotice(numba.core.event.Listener):
    """Says, as Numba starts the first compilation, that the demo's kernels compile."""

    def __init__(self):
        self.compiled = False

    def on_start(self, event):
        if not self.compiled:
            self.compiled = True
            print(
                "compiling the kernels the demo calls (on its first run only: "
                "Numba caches them on disk)...",
                flush=True,
            )

    def on_end(self, event):
        pass


def compile_kernels(calls):
    """Run ``calls()``, which compiles the kernels it calls or loads them from Numba's
    cache; if Numba compiles, say so as it starts, and the time it took."""
    notice = _CompileNotice()
    start = time.perf_counter()
    with numba.core.event.install_listener("numba:compile", notice):
        calls()
    if notice.compiled:
        print(f"compiled in {time.perf_counter() - start:.1f} s", flush=True)


def _first_steps(data, models, norms, lr, batch_size):
    """One batch and the evaluations of each network: every kernel the runs call, so that
    their bars and remaining times measure the training alone."""
    for model in models:
        for norm in norms:
            train(model, norm, lr, data, epochs=1, batch_size=batch_size, batches=1)


def _run(model, norm, lr, data, epochs, batch_size, seed, tqdm):
    """One run of :func:`run_demo`, with a tqdm bar of its epochs."""
    desc = f"{model:<5} {norm:<5} lr={lr}"
    _, history = train(
        model,
        norm,
        lr,
        data,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        progress=lambda epoch_range: tqdm(epoch_range, desc=desc, unit="epoch"),
    )
    exact = history.get("exact_test_acc")
    return dict(
        model=model,
        norm=norm,
        lr=lr,
        history=history,
        train_acc=history["train_acc"][-1],
        test_acc=history["test_acc"][-1],
        exact_test_acc=exact[-1] if exact else None,
    )


def format_table(runs):
    """The runs as a Markdown table."""
    header = ("model", "norm", "lr", "train acc", "test acc", "test acc, exact BN stats")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run in runs:
        exact = "" if run["exact_test_acc"] is None else f"{run['exact_test_acc']:.3f}"
        cells = (
            run["model"],
            run["norm"],
            str(run["lr"]),
            f"{run['train_acc']:.3f}",
            f"{run['test_acc']:.3f}",
            exact,
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(runs, plt):
    """Training loss and test accuracy per epoch, one row of plots per learning rate.

    Batch-norm runs also plot their test accuracy with the exact statistics
    (``exact_test_acc``).
    """
    lrs = list(dict.fromkeys(run["lr"] for run in runs))
    fig, axes = plt.subplots(len(lrs), 2, figsize=(11, 3.6 * len(lrs)), squeeze=False)
    colors = dict(zip(NORMS, ("tab:gray", "tab:blue", "tab:orange", "tab:green")))
    styles = dict(zip(MODELS, ("-", "--")))
    for run in runs:
        loss_axes, acc_axes = axes[lrs.index(run["lr"])]
        history = run["history"]
        epochs = np.arange(1, len(history["loss"]) + 1)
        label = f"{run['model']}, {run['norm']}"
        style = dict(color=colors[run["norm"]], linestyle=styles[run["model"]])
        loss_axes.plot(epochs, history["loss"], label=label, **style)
        acc_axes.plot(epochs, history["test_acc"], label=label, **style)
        if "exact_test_acc" in history:
            acc_axes.plot(
                epochs,
                history["exact_test_acc"],
                label=f"{label}, exact BN stats",
                **{**style, "color": "tab:purple"},
            )
    for (loss_axes, acc_axes), lr in zip(axes, lrs):
        loss_axes.set(
            title=f"training loss, lr = {lr}",
            xlabel="epoch",
            ylabel="mean cross-entropy",
            yscale="log",
        )
        acc_axes.set(
            title=f"test accuracy (evaluation mode), lr = {lr}",
            xlabel="epoch",
            ylabel="test accuracy",
            ylim=(0, 1),
        )
    # The accuracy plots have every line: the runs' and the exact statistics'.
    handles, labels = axes[0, 1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(NORMS) + 1, fontsize="small")
    fig.tight_layout(rect=(0, 0.1 / len(lrs), 1, 1))
    return fig


def plot(runs, path, plt):
    """Save :func:`figure` of ``runs`` as a PNG at ``path``."""
    fig = figure(runs, plt)
    fig.savefig(path, dpi=100)
    plt.close(fig)
