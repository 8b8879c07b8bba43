#!/usr/bin/env python3
"""Export a small example twin as a TorchScript file for twinloop's `torchscript` family.

The contract twinloop's loader checks (twin/src/torchscript_twin.cpp):
  * forward(x) takes float32 [N x D]: N stimuli, their D values in the stimulus space's
    dimension order and units (e.g. direction in degrees, contrast 0..1);
  * it returns the EXPECTED SPIKE COUNT in the trial's response window, float [N x U] >= 0,
    one column per recorded unit; or a tuple (mean, dispersion) whose NB2 dispersion is
    [N x U], [U] or a scalar (variance = mean + dispersion * mean^2).

The example network: angular dimensions (--angle-dims) become cos/sin, the others pass through
as they are; a 2-layer MLP; softplus keeps the counts non-negative.

    /usr/bin/python3 export_torchscript_twin.py out.pt --units 384 --dims 2 --angle-dims 0
"""
import argparse
import math
from typing import List, Tuple

import torch
from torch import nn


class MlpTwin(nn.Module):
    def __init__(self, dims: int, units: int, hidden: int, angle_dims: List[int]):
        super().__init__()
        self.dims = dims
        angular = torch.zeros(dims, dtype=torch.bool)
        for d in angle_dims:
            angular[d] = True
        # Buffers, not Python lists: they travel inside the TorchScript file.
        self.register_buffer("angular", angular)
        features = dims + int(angular.sum().item())
        self.hidden = nn.Linear(features, hidden)
        self.out = nn.Linear(hidden, units)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        rad = x * (math.pi / 180.0)
        linear = torch.where(self.angular.unsqueeze(0), torch.cos(rad), x)
        sines = torch.sin(rad)[:, self.angular]
        return torch.cat([linear, sines], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.hidden(self.features(x)))
        return nn.functional.softplus(self.out(h))


class MlpTwinWithDispersion(nn.Module):
    """The same network plus a learnt per-unit NB2 dispersion: returns (mean, dispersion)."""

    def __init__(self, mean: MlpTwin, units: int):
        super().__init__()
        self.mean = mean
        self.log_dispersion = nn.Parameter(torch.full((units,), -2.0))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.mean(x), torch.exp(self.log_dispersion)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="path of the TorchScript file to write")
    parser.add_argument("--units", type=int, required=True, help="recorded units (columns)")
    parser.add_argument("--dims", type=int, required=True, help="stimulus dimensions (inputs)")
    parser.add_argument("--angle-dims", default="",
                        help="comma-separated indices of dimensions in degrees, e.g. 0")
    parser.add_argument("--hidden", type=int, default=32, help="hidden layer width")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    parser.add_argument("--with-dispersion", action="store_true",
                        help="return (mean, dispersion) instead of the mean alone")
    args = parser.parse_args()
    if args.units < 1 or args.dims < 1:
        parser.error("--units and --dims must be >= 1")
    angle_dims = [int(d) for d in args.angle_dims.split(",") if d.strip()]
    if any(d < 0 or d >= args.dims for d in angle_dims):
        parser.error("--angle-dims must index dimensions in [0, --dims)")

    torch.manual_seed(args.seed)
    model: nn.Module = MlpTwin(args.dims, args.units, args.hidden, angle_dims)
    if args.with_dispersion:
        model = MlpTwinWithDispersion(model, args.units)
    model.eval()
    scripted = torch.jit.script(model)
    # Fail here, not in the rig, if the module does not run on the declared input shape.
    with torch.no_grad():
        scripted(torch.zeros(3, args.dims))
    scripted.save(args.output)


if __name__ == "__main__":
    main()
