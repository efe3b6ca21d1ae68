"""First call of each norm in a fresh interpreter, kernels loaded from the on-disk cache."""

import subprocess
import sys

FIRST_CALL = """
import time
start = time.perf_counter()
import numpy as np
import numbanorm
x = np.ones((4, 8, 5, 5), np.float32)
dy = np.ones_like(x)
norm = {norm!r}
args = (2,) if norm == "group_norm" else ()
if norm == "moments":
    numbanorm.moments(x, axis=(0, 2, 3))
else:
    y, *stats = getattr(numbanorm, norm + "_forward")(x, *args)
    getattr(numbanorm, norm + "_backward")(dy, x, *args, *stats)
print(time.perf_counter() - start)
"""


class FirstCall:
    """Seconds from ``import numbanorm`` to the first forward and backward of a norm."""

    params = ["layer_norm", "rms_norm", "batch_norm", "group_norm", "instance_norm", "moments"]
    param_names = ["norm"]
    timeout = 900

    def setup_cache(self):
        subprocess.run(
            [sys.executable, "-m", "numbanorm", "warmup", "--dtypes", "float32"],
            capture_output=True,
            check=True,
        )

    def track_first_call(self, norm):
        script = FIRST_CALL.format(norm=norm)
        run = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        return float(run.stdout)

    track_first_call.unit = "seconds"
