"""The training demo: batch norm trains the sigmoid LeNet at lr=1.0, the plain one stalls."""

import re
import sys

import numba
import numpy as np
import pytest

pytest.importorskip("sklearn")

from numbanorm._cli import demo  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    """600 training images and the full test split."""
    x_train, y_train, x_test, y_test = demo.load_digits(seed=0)
    return x_train[:600], y_train[:600], x_test, y_test


@pytest.fixture(scope="module")
def lenets(digits):
    """``{norm: (network, history)}`` after 4 epochs at lr=1.0, same seed."""
    return {
        norm: demo.train("lenet", norm, 1.0, digits, epochs=4, batch_size=32, seed=0)
        for norm in ("none", "batch")
    }


def test_batch_norm_beats_the_plain_sigmoid_lenet_at_a_high_rate(digits, lenets):
    _, plain = lenets["none"]
    network, batch = lenets["batch"]
    assert plain["loss"][-1] > 2.2  # ln(10) = 2.30: no better than guessing
    assert batch["loss"][-1] < 1.0
    assert max(plain["test_acc"]) < 0.2
    # Each epoch's accuracy with exact statistics left the running averages as they were.
    assert demo.accuracy(network, *digits[2:]) == batch["test_acc"][-1]
    demo.recompute_network_stats(network, digits[0])
    exact_test_acc = demo.accuracy(network, *digits[2:])
    assert batch["exact_test_acc"][-1] == exact_test_acc
    assert len(batch["exact_test_acc"]) == 4 and "exact_test_acc" not in plain
    assert exact_test_acc > 0.7
    assert exact_test_acc > max(plain["test_acc"]) + 0.5


def test_evaluation_mode_is_deterministic_and_per_sample(digits, lenets):
    network, _ = lenets["batch"]
    x_test = digits[2]
    network.eval()
    state = [layer.state_dict() for layer in network.layers if hasattr(layer, "state_dict")]
    first = network(x_test)
    np.testing.assert_array_equal(network(x_test), first)
    # With running statistics, a sample's output does not depend on its batch.
    np.testing.assert_allclose(network(x_test[:5]), first[:5], rtol=1e-5, atol=1e-6)
    network.train()
    after = [layer.state_dict() for layer in network.layers if hasattr(layer, "state_dict")]
    for before_layer, after_layer in zip(state, after):
        for name, value in before_layer.items():
            np.testing.assert_array_equal(after_layer[name], value)


@pytest.mark.parametrize("model", demo.MODELS)
@pytest.mark.parametrize("norm", demo.NORMS)
def test_network_gradients_match_finite_differences(monkeypatch, model, norm):
    monkeypatch.setattr(demo, "DTYPE", np.float64)
    rng = np.random.default_rng(0)
    network = demo.build_network(model, norm, rng)
    x, labels = rng.uniform(0, 1, (6, 1, 8, 8)), rng.integers(0, 10, 6)

    def loss(inputs):
        return demo.cross_entropy(network(inputs), labels)[0]

    _, dlogits = demo.cross_entropy(network(x), labels)
    network.zero_grad()
    dx = network.backward(dlogits)
    direction = rng.standard_normal(x.shape)
    step = 1e-6
    numeric = (loss(x + step * direction) - loss(x - step * direction)) / (2 * step)
    np.testing.assert_allclose((dx * direction).sum(), numeric, rtol=1e-5, atol=1e-7)
    for layer in network.layers:
        for name, param in layer.parameters().items():
            direction = rng.standard_normal(param.shape)
            analytic = (layer.grads[name] * direction).sum()
            param += step * direction
            plus = loss(x)
            param -= 2 * step * direction
            minus = loss(x)
            param += step * direction
            np.testing.assert_allclose(
                analytic,
                (plus - minus) / (2 * step),
                rtol=1e-4,
                atol=1e-7,
                err_msg=f"{type(layer).__name__}.{name}",
            )


def test_command_prints_the_table_and_writes_the_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    from numbanorm.__main__ import main

    output = tmp_path / "curves.png"
    main(
        [
            "demo",
            "--epochs",
            "1",
            "--models",
            "mlp",
            "--lr",
            "1.0",
            "--norms",
            "none",
            "batch",
            "--output",
            str(output),
        ]
    )
    printed = capsys.readouterr().out
    assert "| model | norm | lr | train acc | test acc | test acc, exact BN stats |" in printed
    assert "| mlp | none | 1.0 |" in printed and "| mlp | batch | 1.0 |" in printed
    assert f"plot: {output}" in printed
    assert output.read_bytes().startswith(b"\x89PNG")


def _history(epochs, batch_norm):
    ramp = np.linspace(0.1, 0.9, epochs)
    history = {"loss": list(2.3 - 2 * ramp), "train_acc": list(ramp), "test_acc": list(ramp)}
    if batch_norm:
        history["exact_test_acc"] = list(ramp + 0.05)
    return history


def test_plot_labels_every_axis_and_adds_the_exact_statistics_curves():
    pytest.importorskip("matplotlib")
    _, plt, _ = demo._import_extras()
    runs = [
        dict(model=model, norm=norm, lr=lr, history=_history(5, norm == "batch"))
        for model in demo.MODELS
        for lr in (1.0, 0.1)
        for norm in demo.NORMS
    ]
    figure = demo.figure(runs, plt)
    try:
        axes = figure.get_axes()
        assert len(axes) == 4
        assert all(a.get_xlabel() == "epoch" and a.get_ylabel() for a in axes)
        [legend] = figure.legends
        labels = [text.get_text() for text in legend.get_texts()]
        for run in runs:
            assert f"{run['model']}, {run['norm']}" in labels
        for lr, accuracy_axes in zip((1.0, 0.1), axes[1::2]):
            lines = {line.get_label(): line for line in accuracy_axes.get_lines()}
            for model in demo.MODELS:
                label = f"{model}, batch, exact BN stats"
                assert label in labels
                [run] = [
                    r for r in runs if (r["model"], r["norm"], r["lr"]) == (model, "batch", lr)
                ]
                np.testing.assert_array_equal(
                    lines[label].get_ydata(), run["history"]["exact_test_acc"]
                )
                np.testing.assert_array_equal(lines[label].get_xdata(), np.arange(1, 6))
    finally:
        plt.close(figure)


def test_compiling_is_announced_with_its_time_and_loading_is_not(capsys):
    def add_one(x):
        return x + 1

    jitted = numba.njit(add_one)  # a new function: compiled at its first call
    demo.compile_kernels(lambda: jitted(1))
    first = capsys.readouterr().out.splitlines()
    assert len(first) == 2
    assert first[0].startswith("compiling the kernels the demo calls")
    assert re.fullmatch(r"compiled in \d+\.\d s", first[1])
    demo.compile_kernels(lambda: jitted(2))
    assert capsys.readouterr().out == ""


def test_missing_extras_name_the_extra_and_the_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ImportError) as error:
        demo.run_demo()
    message = str(error.value)
    assert 'the "examples" extra (pip install ".[examples]" in a numbanorm clone)' in message
    assert "pip install scikit-learn matplotlib tqdm" in message
    assert "numbanorm[examples]" not in message
