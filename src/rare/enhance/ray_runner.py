"""Optional scale-out on Ray: one actor per worker (one per GPU), each holding its own engine.

Shards are the unit of work, exactly as in the single-process path, and every actor writes into
the same shard store and item cache (a shared filesystem on a real cluster). The driver only
plans and assembles, so the output is byte-identical to a single-process run.
"""

from __future__ import annotations

from collections.abc import Callable

from rare.config.enhance import RayOptions
from rare.enhance.backends.base import Backend
from rare.enhance.engine import Engine, EngineConfig, Progress, Shard, ShardStats


class ShardWorker:
    def __init__(self, config: EngineConfig, make_backend: Callable[[], Backend]):
        from rare import runtime

        runtime.configure()
        self.engine = Engine(config, make_backend)

    def process(self, shard: Shard) -> ShardStats:
        return self.engine.process(shard)


def run_on_ray(options: RayOptions, config: EngineConfig, make_backend: Callable[[], Backend],
               shards: list[Shard], progress: Progress | None = None) -> list[ShardStats]:
    import ray
    from ray.util import ActorPool

    started = not ray.is_initialized()
    if started:
        ray.init(address=options.address, include_dashboard=False, configure_logging=False)
    worker = ray.remote(num_cpus=options.num_cpus_per_worker, num_gpus=options.num_gpus_per_worker)(ShardWorker)
    actors = [worker.options(max_restarts=1, max_task_retries=2).remote(config, make_backend)
              for _ in range(min(options.num_workers, max(1, len(shards))))]
    done: list[ShardStats] = []
    try:
        for stats in ActorPool(actors).map_unordered(lambda actor, shard: actor.process.remote(shard), shards):
            done.append(stats)
            if progress:
                progress(stats.items)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
    return done
