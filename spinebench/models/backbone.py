"""The shared segmentation backbone, so every method is compared on the same network.

``unet`` follows the 2D UNet of SSL4MIS and UniMatch's medical code (channels 16-256,
Conv-BN-LeakyReLU blocks, encoder dropout 0.05-0.5, bilinear up-sampling). ``timm`` swaps the
encoder for any timm feature extractor (random weights unless pretrained). Both expose
``encode`` and ``decode`` separately because feature-perturbation methods (UniMatch) perturb
the encoder features between the two (:meth:`SegmentationNet.forward_feature_dropout`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 8


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 8 groups (fewer when ``channels`` does not divide by 8)."""
    return nn.GroupNorm(math.gcd(GROUPS, channels), channels)


NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "instance": partial(nn.InstanceNorm2d, affine=True),
    "group": group_norm,
}
"""Values of ``model.norm``: the sources' BatchNorm, or a per-image normalisation, InstanceNorm
(nnU-Net's choice) or GroupNorm (Wu & He 2018), whose statistics never mix the slices of a batch
(labeled with unlabeled, or one process's share with another's)."""


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, dropout: float, norm: str = "batch") -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            NORMS[norm](cout),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(cout, cout, 3, padding=1),
            NORMS[norm](cout),
            nn.LeakyReLU(),
        )


class UpBlock(nn.Module):
    """1x1 conv, bilinear x2, concatenate the skip, conv block."""

    def __init__(self, cin: int, cskip: int, cout: int, norm: str = "batch") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(cin, cskip, 1)
        self.block = ConvBlock(cskip * 2, cout, 0.0, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(
            self.reduce(x), size=skip.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.block(torch.cat([skip, x], dim=1))


class Decoder(nn.Module):
    """Decodes a feature pyramid (finest first) to class logits at the finest resolution."""

    def __init__(self, channels: list[int], num_classes: int, norm: str = "batch") -> None:
        super().__init__()
        rev = channels[::-1]
        self.ups = nn.ModuleList(
            UpBlock(rev[i], rev[i + 1], rev[i + 1], norm) for i in range(len(rev) - 1)
        )
        self.head = nn.Conv2d(channels[0], num_classes, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, skip in zip(self.ups, features[-2::-1], strict=True):
            x = up(x, skip)
        return self.head(x)


class SegmentationNet(nn.Module):
    """The encoder/decoder split every backbone shares; ``forward(x) == decode(encode(x), size)``.

    Subclasses set ``self.decoder`` and implement :meth:`encode`.
    """

    decoder: Decoder

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature pyramid, finest first."""
        raise NotImplementedError

    def decode(
        self, features: list[torch.Tensor], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Logits at the finest feature's resolution, or resized to ``size`` when given."""
        logits = self.decoder(features)
        if size is None or tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), size=(x.shape[-2], x.shape[-1]))

    def forward_feature_dropout(
        self, x: torch.Tensor, p: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean and feature-perturbed logits from one encoder pass.

        Every encoder feature map is concatenated with a ``Dropout2d(p)`` copy of itself, so both
        halves go through the decoder as one batch (its BatchNorm sees both), as UniMatch's
        medical UNet does (``model/unet.py`` 171-173). The dropout is applied even in eval mode,
        as there.
        """
        features = self.encode(x)
        doubled = [torch.cat((f, F.dropout2d(f, p, training=True))) for f in features]
        clean, perturbed = self.decode(doubled, size=(x.shape[-2], x.shape[-1])).chunk(2)
        return clean, perturbed


class UNet(SegmentationNet):
    """Encoder/decoder UNet; the decoder's output already has the input's size."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: list[int],
        dropout: list[float],
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if len(channels) != len(dropout):
            raise ValueError("model.channels and model.dropout need the same length")
        self.encoder = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else channels[i - 1], c, d, norm)
            for i, (c, d) in enumerate(zip(channels, dropout, strict=True))
        )
        self.decoder = Decoder(channels, num_classes, norm)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features


class TimmUNet(SegmentationNet):
    """A timm feature extractor as encoder with the UNet decoder; logits at input size."""

    def __init__(self, encoder: str, in_channels: int, num_classes: int) -> None:
        super().__init__()
        import timm

        self.encoder = timm.create_model(
            encoder, features_only=True, pretrained=False, in_chans=in_channels
        )
        info: Any = self.encoder.feature_info
        self.decoder = Decoder(list(info.channels()), num_classes)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.encoder(x))


def build_backbone(
    model_config: dict[str, Any], in_channels: int, num_classes: int
) -> SegmentationNet:
    """The configured backbone (``model.*``); every method calls this, none builds its own."""
    kind = model_config["backbone"]
    if kind == "unet":
        return UNet(
            in_channels,
            num_classes,
            list(model_config["channels"]),
            list(model_config["dropout"]),
            model_config["norm"],
        )
    if kind == "timm":
        return TimmUNet(model_config["timm_encoder"], in_channels, num_classes)
    from spinebench.errors import ConfigError

    raise ConfigError(f"model.backbone {kind!r} is unknown; use unet or timm")
