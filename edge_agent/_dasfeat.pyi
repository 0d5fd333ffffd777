"""Type stubs of the C extension `edge_agent/_dasfeat.c` (the das profile's per-sample passes)."""

import numpy as np

def prep(x: np.ndarray, taper: np.ndarray, xt: np.ndarray,
         p2: np.ndarray, p4: np.ndarray) -> None: ...
def power(spec: np.ndarray, freqs: np.ndarray, edges: np.ndarray, out: np.ndarray,
          logp: np.ndarray, eps: float) -> None: ...
