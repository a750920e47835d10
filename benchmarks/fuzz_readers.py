"""The readers' fuzz tests (tests/test_fuzz.py) with many more examples than CI runs.

    python benchmarks/fuzz_readers.py [--examples 2000]

Prints how many mutated files each reader was given and how long it took; any file that makes a reader raise
something other than the pack's own error, hang, or grow memory far beyond its size fails the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000, help="examples per file reader (media: a sixth)")
    args = parser.parse_args()
    env = dict(os.environ, WAN_VAE_FUZZ_EXAMPLES=str(args.examples))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py",
                           "--hypothesis-show-statistics"], cwd=ROOT, env=env)  # fmt: skip
    print(f"\n{args.examples} examples per reader ({max(args.examples // 6, 5)} for media) in {time.perf_counter() - start:.0f} s: "
          f"{'all refused cleanly or read' if proc.returncode == 0 else 'FAILURES above'}")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
