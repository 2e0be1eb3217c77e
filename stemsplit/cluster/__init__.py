"""``stemsplit batch --ray``: separating a catalogue on a Ray cluster (the ``ray`` extra).

    import stemsplit.cluster as cluster
    from stemsplit.plan import BATCH_FILENAME, OutputOptions

    with cluster.connected("auto"):                    # or ray.init(...) of your own
        paths = cluster.paths_dataset(["/shared/album"])
        spec = cluster.WorkerSpec(model="four_stems_best",
                                  options=OutputOptions("/shared/out", filename=BATCH_FILENAME))
        for record in cluster.separate_dataset(paths, spec).iter_rows():
            print(record["input"], record["status"], record["error"])

``run_batch`` does what ``stemsplit batch --ray`` does with them: one ``TrackResult`` per
input, a file that ran twice counted once, a file whose worker kept dying reported failed.

Nothing outside this package imports ray, and importing this package does not either: ray
is imported when a function here first needs it.
"""

from .connection import connected, import_ray
from .dataset import ClusterResources, paths_dataset, run_batch, separate_dataset
from .records import as_record, as_result
from .worker import SeparationWorker, WorkerSpec

__all__ = ["ClusterResources", "SeparationWorker", "WorkerSpec", "as_record", "as_result",
           "connected", "import_ray", "paths_dataset", "run_batch", "separate_dataset"]
