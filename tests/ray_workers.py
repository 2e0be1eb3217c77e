"""A worker class for the Ray tests, importable by the test cluster's workers (its head is
started with this checkout on PYTHONPATH): a file whose name holds 'crash' kills the
process separating it, as a native crash would, after leaving a half-written temporary in
the track's folder, as a writer killed mid-file does. Each attempt appends the pid to
``<file>.attempts``."""

from __future__ import annotations

import os

from stemsplit.cluster.worker import SeparationWorker
from stemsplit.plan import output_paths
from stemsplit.temporaries import owned_name


class CrashingWorker(SeparationWorker):
    def separate(self, item):
        if "crash" in item.path.name and self.separator is not None:
            with open(f"{item.path}.attempts", "a") as attempts:
                attempts.write(f"{os.getpid()}\n")
            model = self.separator.model
            names = model.plan(self.spec.selection).names
            destination = output_paths(item.path, names, model.name, self.spec.options,
                                       item.relative_dir)[names[0]]
            destination.parent.mkdir(parents=True, exist_ok=True)
            (destination.parent / owned_name(f".{destination.name}.", ".part")).write_bytes(
                b"RIFF half a file")
            os._exit(9)
        return super().separate(item)
