"""The benchmark tables: ``python benchmarks/run.py [conv|local|pool|norm|layers|models|all] [--json FILE] [--quick]``.

The same as ``python -m torch_cnn_ops bench ...``: the timings of every family live in
torch_cnn_ops/benchmark/, so that an installed package runs them too. Set GLIBC_TUNABLES
(empty for glibc's defaults) to measure with another allocator than the steady one.
"""

import sys

from torch_cnn_ops.__main__ import main
from torch_cnn_ops.benchmark import use_steady_allocator

if __name__ == "__main__":
    if not {"-h", "--help"} & set(sys.argv):
        use_steady_allocator()
    sys.exit(main(["bench", *sys.argv[1:]]))
