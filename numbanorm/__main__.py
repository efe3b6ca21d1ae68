"""Command line: ``python -m numbanorm warmup``, ``bench`` and ``demo``."""

import argparse
import time

import numpy as np


def warmup(dtypes=("float32", "float64")):
    """Compile (or load from the cache) every kernel for the given dtypes.

    Small inputs run the kernels' serial variants and large ones the
    parallel kernels, so both sizes are run.  Returns the seconds spent on
    each dtype.
    """
    import numbanorm as nn

    timings = {}
    for name in dtypes:
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        for spatial, row_length in ((5, 40), (32, 4096)):
            images = rng.standard_normal((4, 8, spatial, spatial)).astype(name)
            rows = rng.standard_normal((6, row_length)).astype(name)
            channels_last = np.ascontiguousarray(np.moveaxis(images, 1, -1))
            for x, axis in ((images, 1), (channels_last, -1)):
                for forward, backward, extra in (
                    (nn.batch_norm_forward, nn.batch_norm_backward, ()),
                    (nn.instance_norm_forward, nn.instance_norm_backward, ()),
                    (nn.group_norm_forward, nn.group_norm_backward, (4,)),
                ):
                    y, mean, rstd = forward(x, *extra, axis=axis)
                    backward(y, x, *extra, mean, rstd, axis=axis)
            y, mean, rstd = nn.layer_norm_forward(rows)
            nn.layer_norm_backward(y, rows, mean, rstd)
            y, rrms = nn.rms_norm_forward(rows)
            nn.rms_norm_backward(y, rows, rrms)
            nn.moments(images, axis=(0, 2, 3))
        timings[name] = time.perf_counter() - start
    return timings


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m numbanorm")
    commands = parser.add_subparsers(dest="command", required=True)
    warm = commands.add_parser(
        "warmup", help="compile every kernel into the on-disk cache and report the time taken")
    warm.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    speed = commands.add_parser(
        "bench", help="time every norm against the copy ceiling and the importable peers")
    speed.add_argument("--quick", action="store_true", help="fewer repeats (noisier)")
    speed.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    speed.add_argument("--ops", nargs="+", metavar="OP",
                       help="norms or '<norm>.<direction>' names, wildcards allowed "
                            "(directions: forward, forward_out, backward, backward_out)")
    speed.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16"],
                       help="float16 only with --gpu")
    speed.add_argument("--gpu", action="store_true",
                       help="time numbanorm on device arrays against PyTorch CUDA and CuPy, "
                            "and a device-to-device copy")
    speed.add_argument("--markdown", action="store_true",
                       help="also print one Markdown row per case (the README's table)")
    demo = commands.add_parser(
        "demo", help="train sigmoid NumPy networks with and without normalization on "
                     "scikit-learn's digits; needs numbanorm[examples]")
    demo.add_argument("--epochs", type=int, default=10)
    demo.add_argument("--lr", type=float, nargs="+", default=[1.0, 0.1], dest="lrs")
    demo.add_argument("--models", nargs="+", default=["lenet", "mlp"], choices=["lenet", "mlp"])
    demo.add_argument("--norms", nargs="+", default=["none", "batch", "layer", "group"],
                      choices=["none", "batch", "layer", "group"])
    demo.add_argument("--output", default="numbanorm-demo.png", help="path of the PNG plot")
    args = parser.parse_args(argv)
    if args.command == "warmup":
        timings = warmup(args.dtypes)
        print("  ".join(f"{name}: {seconds:.2f} s" for name, seconds in timings.items()))
    elif args.command == "bench":
        from ._bench import bench

        if args.dtype == "float16" and not args.gpu:
            parser.error("--dtype float16 needs --gpu")
        try:
            bench(args.ops, quick=args.quick, json_path=args.json, dtype=args.dtype,
                  markdown=args.markdown, gpu=args.gpu)
        except ValueError as error:
            parser.error(str(error))
    elif args.command == "demo":
        from ._demo import run_demo

        run_demo(epochs=args.epochs, lrs=args.lrs, models=args.models, norms=args.norms,
                 output=args.output)


if __name__ == "__main__":
    main()
