"""``python -m benchmarks``: run every benchmark and write benchmarks/RESULTS.md."""

import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
