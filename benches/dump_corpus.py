"""Write the benchmark's realistic corpus as length-prefixed rows for the Rust example
`parse_corpus` (one-core throughput and callgrind instruction counts without Python around it).

Run: python benches/dump_corpus.py OUT.bin [MB]   (same generator and seed as bench_parse.py)
then: cargo run --release -p mementos-core --example parse_corpus OUT.bin
"""

from __future__ import annotations

import struct
import sys

from mementos_fast import synthetic


def main() -> None:
    out, mb = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8
    rows = synthetic.generate_bytes(mb << 20, seed=2026, malformed_rate=0.02)
    with open(out, "wb") as f:
        for row in rows:
            data = row.encode()
            f.write(struct.pack("<I", len(data)))
            f.write(data)
    print(f"{len(rows)} rows, {sum(len(r.encode()) for r in rows)} bytes -> {out}")


if __name__ == "__main__":
    main()
