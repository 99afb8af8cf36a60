"""The `openai` backend's failover at the mbeir profile's shape: 512 requests a batch, 128 in flight,
one dead base URL listed first and one live one, for max_retries 1 and 6, five batches each.

Prints how many batches succeeded and how many HTTP requests each item cost. A retry goes to the URL
after the one that failed, and a failing URL rests, so every batch should succeed and almost every
item should cost one request. Run from the repository root: `python bench/openai_failover.py`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rare.config.enhance import OpenAIOptions  # noqa: E402
from rare.enhance.backends.interface import BackendUnavailable  # noqa: E402
from rare.enhance.backends.openai import OpenAIBackend  # noqa: E402
from tests.fixtures.openai_server import DEFAULT_MODEL, ScriptedServer  # noqa: E402
from tests.test_enhance_openai import rewrite_request  # noqa: E402

BATCH, CONCURRENCY, TRIALS = 512, 128, 5


def main() -> None:
    live, dead = ScriptedServer().start(), ScriptedServer().start()
    dead.stop()
    try:
        for retries in (1, 6):
            ok, cost, start = 0, Counter(), time.perf_counter()
            for trial in range(TRIALS):
                options = OpenAIOptions(base_urls=[dead.url, live.url], max_concurrency=CONCURRENCY,
                                        max_retries=retries, backoff_s=1.0, timeout_s=30)
                backend = OpenAIBackend(DEFAULT_MODEL, options)
                try:
                    results = backend.generate([rewrite_request(f"hat {trial} {i}") for i in range(BATCH)])
                    ok += 1
                    cost.update(r.requests for r in results)
                except BackendUnavailable as exc:
                    print(f"  batch failed: {str(exc)[:160]}")
                finally:
                    backend.close()
            print(f"max_retries {retries}: {ok}/{TRIALS} batches ok; items by requests they cost "
                  f"{dict(sorted(cost.items()))}; {time.perf_counter() - start:.1f} s")
    finally:
        live.stop()


if __name__ == "__main__":
    main()
