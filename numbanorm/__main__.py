"""Command line: ``python -m numbanorm warmup``, ``bench`` and ``demo``."""

import argparse

from . import __version__
from ._cli import DTYPES, WARMUP_DTYPES


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m numbanorm")
    parser.add_argument("--version", action="version", version=f"numbanorm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    warm = commands.add_parser(
        "warmup",
        help="compile every kernel into the on-disk cache, in parallel processes, "
        "and report the time taken",
    )
    warm.add_argument(
        "--dtypes",
        nargs="+",
        default=WARMUP_DTYPES,
        choices=DTYPES,
        help="float16 runs the float32 kernels",
    )
    warm.add_argument(
        "--quiet", action="store_true", help="print the totals alone, not the calls as they end"
    )
    speed = commands.add_parser(
        "bench", help="time every norm against the copy ceiling and the importable peers"
    )
    speed.add_argument("--quick", action="store_true", help="fewer repeats (noisier)")
    speed.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    speed.add_argument(
        "--ops",
        nargs="+",
        metavar="OP",
        help="norms or '<norm>.<direction>' names, wildcards allowed "
        "(directions: forward, forward_out, eval, eval_out, backward, backward_out)",
    )
    speed.add_argument(
        "--list",
        action="store_true",
        help="list the operations and their inputs (with --ops, those it selects), and exit",
    )
    speed.add_argument("--dtype", default="float32", choices=DTYPES, help="float16 only with --gpu")
    speed.add_argument(
        "--gpu",
        action="store_true",
        help="time numbanorm on device arrays against PyTorch CUDA and CuPy, "
        "and a device-to-device copy",
    )
    speed.add_argument(
        "--where",
        choices=["broadcast", "full"],
        help="time numbanorm's masked calls (a mask broadcast along the channel or "
        "normalized axis, or one of x's shape) against its unmasked ones",
    )
    speed.add_argument(
        "--markdown",
        action="store_true",
        help="also print one Markdown row per case (the benchmarks page's table)",
    )
    demo = commands.add_parser(
        "demo",
        help="train sigmoid NumPy networks with and without normalization on "
        'scikit-learn\'s digits; needs the "examples" extra '
        "(scikit-learn, matplotlib, tqdm)",
    )
    demo.add_argument("--epochs", type=int, default=10)
    demo.add_argument("--lr", type=float, nargs="+", default=[1.0, 0.1], dest="lrs")
    demo.add_argument("--models", nargs="+", default=["lenet", "mlp"], choices=["lenet", "mlp"])
    demo.add_argument(
        "--norms",
        nargs="+",
        default=["none", "batch", "layer", "group"],
        choices=["none", "batch", "layer", "group"],
    )
    demo.add_argument("--output", default="numbanorm-demo.png", help="path of the PNG plot")
    args = parser.parse_args(argv)
    if args.command == "warmup":
        from ._cli.warmup import command

        command(args.dtypes, quiet=args.quiet)
    elif args.command == "bench":
        from ._cli.bench import bench, operation_list

        if args.dtype == "float16" and not args.gpu:
            speed.error("--dtype float16 needs --gpu")
        try:
            if args.list:
                print(operation_list(args.ops))
                return
            bench(
                args.ops,
                quick=args.quick,
                json_path=args.json,
                dtype=args.dtype,
                markdown=args.markdown,
                gpu=args.gpu,
                where=args.where,
            )
        except ValueError as error:
            speed.error(str(error))
    elif args.command == "demo":
        from ._cli.demo import run_demo

        run_demo(
            epochs=args.epochs,
            lrs=args.lrs,
            models=args.models,
            norms=args.norms,
            output=args.output,
        )


if __name__ == "__main__":
    main()
