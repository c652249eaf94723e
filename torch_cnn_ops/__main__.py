"""Command line: ``python -m torch_cnn_ops {demo,check,bench,summary} ...`` (``--help`` on each)."""

import argparse
import sys

# The built-in example models of `summary`: name -> (default input size (C, H, W), description).
_SUMMARY_MODELS = {
    "lenet5": ((1, 32, 32), "LeNet5 (conv 5x5, pool, conv 5x5, pool, fc 120, 84, 10)"),
    "resnet": ((3, 32, 32), "the small ResNet (BasicBlock, stages of 2, 2, 2 blocks, width 16)"),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m torch_cnn_ops", description="torch_cnn_ops command line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,check,bench,summary}")
    demo = sub.add_parser("demo", help="train a CNN built from these modules on scikit-learn's digits",
                          description="Trains a CNN built only from torch_cnn_ops modules (Gabor-initialised "
                                      "convolution, batch norm, residual block, max and min pooling, tiled "
                                      "convolution, global pooling) on scikit-learn's handwritten digits, "
                                      "prints the test accuracy and the network's summary, and saves plots.")
    from .demo import add_arguments

    add_arguments(demo)
    check = sub.add_parser("check", help="parity of every op against its built-in twin; exit 1 on any failure",
                           description="Runs every op against its built-in twin (or the pure-PyTorch "
                                       "workaround) and prints a table of max errors; exits 1 on any failure.")
    check.add_argument("--seed", type=int, default=0, help="random seed of the inputs (default: 0)")
    bench = sub.add_parser("bench", help="benchmark tables: ours against the built-ins",
                           description="Times our ops against the built-ins and the workarounds and prints tables.")
    bench.add_argument("family", nargs="?", default="all", help="an op family (conv, local, pool, norm), layers (small layers: per-call cost), models (whole networks against tco.convert of them) or 'all'")
    bench.add_argument("--json", help="also write the results to this JSON file")
    bench.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
    summary = sub.add_parser(
        "summary", help="per-layer table (shapes, params, multiply-adds, receptive fields) of an example model",
        description="Prints tco.summary of a built-in example model: "
                    + "; ".join(f"{name}: {desc}, input {'x'.join(map(str, size))} by default"
                                for name, (size, desc) in _SUMMARY_MODELS.items()) + ".")
    summary.add_argument("--model", choices=sorted(_SUMMARY_MODELS), default="lenet5",
                         help="the example model (default: lenet5)")
    summary.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                         help="input channels, height and width (default: the model's own)")
    summary.add_argument("--num-classes", type=int, default=10, help="outputs of the model (default: 10)")
    return parser


def _demo(args, parser) -> int:
    from .demo import run

    if args.epochs < 1 or args.world_size < 1:
        parser.error("--epochs and --world-size must be positive")
    run(args.epochs, args.out, args.world_size, progress=not args.no_progress)
    return 0


def _check(args, parser) -> int:
    from .benchmark import format_table
    from .check import run_check

    rows = run_check(args.seed)
    print(format_table(rows, ["op", "variant", "dtype", "max rel error", "tolerance", "result"]))
    failed = sum(r["result"] != "pass" for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _bench(args, parser) -> int:
    from .benchmark import FAMILIES, run_families

    families = list(FAMILIES) if args.family == "all" else [args.family]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown family {unknown[0]!r}; choose from {', '.join(FAMILIES)} or 'all'")
    run_families(families, json_path=args.json, quick=args.quick, isolate=True)
    return 0


def _summary(args, parser) -> int:
    from . import models
    from .summary import summary

    channels, height, width = args.input_size or _SUMMARY_MODELS[args.model][0]
    if min(channels, height, width) < 1 or args.num_classes < 1:
        parser.error("--input-size and --num-classes must be positive")
    if args.model == "lenet5":
        if height != width:
            parser.error(f"lenet5 takes square images, got --input-size {channels} {height} {width}")
        try:
            model = models.LeNet5(in_channels=channels, num_classes=args.num_classes, input_size=height)
        except ValueError as e:  # an input too small for the network is a usage error
            parser.error(str(e))
    else:
        model = models.ResNet(num_classes=args.num_classes, in_channels=channels)
    print(summary(model, (channels, height, width)))
    return 0


_COMMANDS = {"demo": _demo, "check": _check, "bench": _bench, "summary": _summary}


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    return _COMMANDS[args.command](args, parser)


if __name__ == "__main__":
    if sys.argv[1:2] == ["bench"] and not {"-h", "--help"} & set(sys.argv):
        from .benchmark import use_steady_allocator

        use_steady_allocator()
    sys.exit(main())
