"""The limit: the model called directly, batch after batch, no HTTP, no queue.

`python -m bench.inprocess --runtime onnx --batch 32` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench.corpus import corpus
from serve_apps.text_embedding.runtimes import make_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runtime", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--warmup-s", type=float, default=3)
    parser.add_argument("--window-s", type=float, default=10)
    parser.add_argument("--corpus-size", type=int, default=4096)
    args = parser.parse_args()

    texts = corpus(args.corpus_size)
    batches = [texts[i : i + args.batch] for i in range(0, len(texts) - args.batch + 1, args.batch)]
    encoder = make_encoder(args.runtime, args.device)
    latencies, done, i = [], 0, 0
    start = time.perf_counter()
    window_start = start + args.warmup_s
    window_end = window_start + args.window_s
    while (began := time.perf_counter()) < window_end:
        encoder.encode(batches[i % len(batches)])
        i += 1
        finished = time.perf_counter()
        if began >= window_start and finished <= window_end:
            latencies.append(finished - began)
            done += args.batch
    ms = np.array(latencies or [float("nan")]) * 1000
    print(
        json.dumps(
            {
                "texts_per_s": done / args.window_s,
                "batches": len(latencies),
                "p50_ms": float(np.percentile(ms, 50)),
                "p90_ms": float(np.percentile(ms, 90)),
                "p99_ms": float(np.percentile(ms, 99)),
            }
        )
    )


if __name__ == "__main__":
    main()
