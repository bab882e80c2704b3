"""The five networks (PyTorch). Small on purpose: they train in minutes on two CPU cores.

Each network has ``maps(x)``, the dense outputs the losses use, and ``forward(x)``, the exported
graph: the tensors of the serving contract (``probabilities``, ``values``, ``boxes`` and
``scores``), post-processing included, so that Triton returns ready-to-use values and the
gateway needs no model-specific code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CenterNet", "LesionClassifierNet", "SizeRegressorNet", "UNet"]


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class LesionClassifierNet(nn.Module):
    """Per-cell logits on a stride-8 grid; an image is positive when any cell is.

    Max pooling over the grid lets the dense lesion masks supervise every cell while the
    exported output stays one probability per category.
    """

    def __init__(self, categories: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(1, 16, 2),
            _conv(16, 24, 2),
            _conv(24, 24),
            _conv(24, 32, 2),
            _conv(32, 32, dilation=2),
            _conv(32, 32, dilation=4),
            nn.Conv2d(32, categories, 1),
        )

    def maps(self, x: Tensor) -> Tensor:
        result: Tensor = self.body(x)
        return result

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(torch.amax(self.maps(x), dim=(2, 3)))


class SizeRegressorNet(nn.Module):
    """Two stride-4 maps: lesion coverage of each cell, and the diameter of the lesion there.

    ``forward`` reduces them to ``[largest diameter (mm), total area (mm^2)]``. The diameter is
    the largest coverage-weighted mean of the diameter map over 3 x 3 cells: averaging keeps
    the maximum from picking the noisiest cell, and the weights ignore cells that only graze a
    nodule. The area is the summed coverage times the cell's area. Coverage below
    :attr:`floor` counts as none, so thousands of near-zero cells do not add up to a nodule.
    """

    stride = 4
    floor = 0.05
    diameter_scale_mm = 10.0

    def __init__(self, cell_area_mm2: float) -> None:
        super().__init__()
        self.cell_area_mm2 = cell_area_mm2
        self.body = nn.Sequential(
            _conv(1, 8, 2),
            _conv(8, 16, 2),
            _conv(16, 24),
            _conv(24, 24, dilation=2),
            _conv(24, 24, dilation=4),
            nn.Conv2d(24, 2, 1),
        )

    def maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Coverage logits and diameters (in units of :attr:`diameter_scale_mm`)."""
        out = self.body(x)
        return out[:, 0], F.relu(out[:, 1])

    def forward(self, x: Tensor) -> Tensor:
        coverage_logits, diameter = self.maps(x)
        coverage = torch.sigmoid(coverage_logits).unsqueeze(1)
        coverage = torch.where(coverage > self.floor, coverage, torch.zeros_like(coverage))
        mass = F.avg_pool2d(coverage, 3, stride=1, padding=1)
        weighted = F.avg_pool2d(coverage * diameter.unsqueeze(1), 3, stride=1, padding=1)
        local = torch.where(
            mass > self.floor / 9.0, weighted / mass.clamp(min=1e-6), torch.zeros_like(mass)
        )
        largest = torch.amax(local, dim=(1, 2, 3)) * self.diameter_scale_mm
        area = coverage.sum(dim=(1, 2, 3)) * self.cell_area_mm2
        return torch.stack([largest, area], dim=1)


class CenterNet(nn.Module):
    """CenterNet-style detector: centre heatmap, box size and sub-cell offset on a stride-4 grid.

    ``forward`` decodes inside the graph: local maxima of the heatmap (3 x 3 max pooling), the
    ``top_k`` best, their boxes in input pixels. The gateway then applies its score threshold
    and NMS, as for any detector.
    """

    stride = 4

    def __init__(self, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.down = nn.Sequential(_conv(1, 16, 2), _conv(16, 24, 2), _conv(24, 24))
        self.deep = nn.Sequential(
            _conv(24, 32, 2), _conv(32, 32, dilation=2), _conv(32, 32, dilation=4)
        )
        self.fuse = _conv(56, 24)
        self.head = nn.Conv2d(24, 5, 1)
        with torch.no_grad():
            bias = self.head.bias
            assert bias is not None
            bias[0] = -4.0

    def maps(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Heatmap logits ``(B, H, W)``, log box size ``(B, 2, H, W)``, offset ``(B, 2, H, W)``."""
        skip = self.down(x)
        deep = F.interpolate(self.deep(skip), scale_factor=2.0, mode="nearest")
        out = self.head(self.fuse(torch.cat([deep, skip], dim=1)))
        return out[:, 0], out[:, 1:3], torch.sigmoid(out[:, 3:5])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        heat_logits, log_size, offset = self.maps(x)
        heat = torch.sigmoid(heat_logits).unsqueeze(1)
        peaks = F.max_pool2d(heat, 3, stride=1, padding=1)
        heat = torch.where(heat >= peaks, heat, torch.zeros_like(heat))
        width = heat.shape[-1]
        scores, index = torch.topk(heat.flatten(1), self.top_k, dim=1)
        gather_index = index.unsqueeze(1).expand(-1, 2, -1)
        size = torch.exp(torch.gather(log_size.flatten(2), 2, gather_index))
        shift = torch.gather(offset.flatten(2), 2, gather_index)
        cx = ((index % width).to(x.dtype) + shift[:, 0]) * self.stride
        cy = (
            torch.div(index, width, rounding_mode="floor").to(x.dtype) + shift[:, 1]
        ) * self.stride
        half_w, half_h = size[:, 0] / 2.0, size[:, 1] / 2.0
        boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2)
        limit = float(x.shape[-1])
        return boxes.clamp(0.0, limit), scores.unsqueeze(2)


class UNet(nn.Module):
    """A three-level U-Net with a dilated bottleneck; ``forward`` gives sigmoid probabilities."""

    def __init__(
        self, encoder: tuple[int, int, int, int], decoder: tuple[int, int, int], classes: int
    ) -> None:
        super().__init__()
        e1, e2, e3, e4 = encoder
        d3, d2, d1 = decoder
        self.enc1 = _conv(1, e1)
        self.enc2 = _conv(e1, e2, 2)
        self.enc3 = _conv(e2, e3, 2)
        self.bottom = nn.Sequential(
            _conv(e3, e4, 2), _conv(e4, e4, dilation=2), _conv(e4, e4, dilation=4)
        )
        self.dec3 = _conv(e4 + e3, d3)
        self.dec2 = _conv(d3 + e2, d2)
        self.dec1 = _conv(d2 + e1, d1)
        self.head = nn.Conv2d(d1, classes, 1)

    @staticmethod
    def _up(x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def maps(self, x: Tensor) -> Tensor:
        """Logits ``(B, C, H, W)``."""
        s1 = self.enc1(x)
        s2 = self.enc2(s1)
        s3 = self.enc3(s2)
        y = self.bottom(s3)
        y = self.dec3(torch.cat([self._up(y), s3], dim=1))
        y = self.dec2(torch.cat([self._up(y), s2], dim=1))
        y = self.dec1(torch.cat([self._up(y), s1], dim=1))
        result: Tensor = self.head(y)
        return result

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.maps(x))
