"""Command line: ``python -m torch_cnn_ops {check,bench} ...``."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_cnn_ops", description="torch_cnn_ops command line")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="parity of every op against its built-in twin; exit 1 on any failure")
    check.add_argument("--seed", type=int, default=0)
    bench = sub.add_parser("bench", help="benchmark tables: ours against the built-ins")
    bench.add_argument("family", nargs="?", default="all", help="an op family (conv, local, pool) or 'all'")
    bench.add_argument("--json", help="also write the results to this JSON file")
    bench.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
    args = parser.parse_args(argv)

    if args.command == "check":
        from .benchmark import format_table
        from .check import run_check

        rows = run_check(args.seed)
        print(format_table(rows, ["op", "variant", "dtype", "max rel error", "tolerance", "result"]))
        failed = sum(r["result"] != "pass" for r in rows)
        print(f"\n{len(rows) - failed} passed, {failed} failed")
        return 1 if failed else 0

    from .benchmark import FAMILIES, run_families

    families = list(FAMILIES) if args.family == "all" else [args.family]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown family {unknown[0]!r}; choose from {', '.join(FAMILIES)} or 'all'")
    run_families(families, json_path=args.json, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
