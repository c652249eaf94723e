"""Small layers (per-call cost) benchmark (also: python -m torch_cnn_ops bench layers [--json FILE])."""

import argparse

from torch_cnn_ops.benchmark import run_families, use_steady_allocator

if __name__ == "__main__":
    use_steady_allocator()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
    args = parser.parse_args()
    run_families(["layers"], json_path=args.json, quick=args.quick)
