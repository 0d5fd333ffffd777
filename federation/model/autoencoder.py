"""The network: a small dense autoencoder over normalised feature rows.

`AutoEncoder` keeps its normalisation (per-feature ``mean``/``std``) and its per-feature
reconstruction-error scale (``err_scale``) as buffers, so a state dict is the whole model.
Only `AutoEncoder.core` (normalised rows in, normalised reconstruction out) is converted to
int8; the affine normalisation and the score run in numpy on the gateway
(`edge_agent.inference`), in float, with the same formula as `AutoEncoder.score`.

Variants (`ARCHS`) were compared on the simulator scenarios by `federation.model.evaluate`; see
docs/model/README.md for the table that chose the default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: named architectures: hyper-parameters for `AutoEncoder`
ARCHS: dict[str, dict[str, Any]] = {
    "ae-32-8": {"hidden": (32,), "latent": 8},
    "ae-16-4": {"hidden": (16,), "latent": 4},
    "ae-64-32-8": {"hidden": (64, 32), "latent": 8},
    # linear, PCA-initialised: fitted in closed form (`task.fit_linear`), its latent width
    # chosen from the data; not trained by gradient steps, so not federated
    "pca": {"hidden": (), "linear": True},
}
DEFAULT_ARCH = "ae-32-8"
#: architectures fitted in closed form from one site's rows (FedAvg of their weights is
#: not meaningful: principal directions differ in sign and order between sites)
FITTED_ARCHS = ("pca",)


class AutoEncoder(nn.Module):
    """``D -> hidden... -> latent -> ...hidden -> D`` with ReLU, on normalised rows.

    Parameters
    ----------
    dim : int
        Feature-row width D.
    hidden : tuple of int
        Widths of the encoder's hidden layers (the decoder mirrors them).
    latent : int
        Bottleneck width.
    noise : float
        Gaussian input-noise sigma during training (denoising AE); 0 = plain AE.
    linear : bool
        No ReLU: a linear autoencoder (``arch="pca"``, `task.fit_linear`).
    """

    def __init__(
        self, dim: int, hidden: tuple[int, ...] = (32,), latent: int = 8, noise: float = 0.0,
        linear: bool = False,
    ) -> None:
        super().__init__()
        if dim < 1 or latent < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"bad shape: dim={dim} hidden={hidden} latent={latent}")
        self.dim, self.hidden, self.latent, self.noise = dim, tuple(hidden), latent, noise
        self.linear = linear
        widths = [dim, *hidden, latent, *reversed(hidden), dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2 and not linear:
                layers.append(nn.ReLU())
        self.core = nn.Sequential(*layers)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.err_scale: torch.Tensor
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("err_scale", torch.ones(dim))

    @property
    def hyper(self) -> dict[str, Any]:
        """Constructor arguments (to rebuild it from a checkpoint)."""
        hyper: dict[str, Any] = {"hidden": list(self.hidden), "latent": self.latent,
                                 "noise": self.noise}
        return {**hyper, "linear": True} if self.linear else hyper

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw rows -> reconstruction in normalised units."""
        return self.core(self.normalize(x))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over features of the squared residual in units of ``err_scale``."""
        z = self.normalize(x)
        r = (z - self.core(z)) / self.err_scale
        return (r * r).mean(dim=1)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
