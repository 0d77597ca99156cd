"""Three real models whose upsampling is transposed convolution, as factories for `autotune tune --model` and
`autotune bench --model` (`examples/models.py:dcgan_generator`, or `examples.models:dcgan_generator` from the
repository root), for `autotune.torch.layer_problems`, and for `examples/bench_models.py`.

Each factory returns a plain `torch.nn` model (torch's own `nn.ConvTranspose2d`; `autotune.torch.convert(model)`
switches it to this library) and carries `example_input_shapes`, the shapes of its inputs in the benchmark.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn


def dcgan_generator(nz: int = 100, ngf: int = 64, nc: int = 3) -> nn.Sequential:
    """The DCGAN generator of the PyTorch examples (github.com/pytorch/examples, dcgan/main.py): a latent
    (N, nz, 1, 1) to a (N, nc, 64, 64) image; channels nz -> 8*ngf -> 4*ngf -> 2*ngf -> ngf -> nc, the first
    layer k4 s1 p0 (1x1 -> 4x4), then k4 s2 p1 (doubling), no bias, batch norm and ReLU between, tanh last."""
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())


dcgan_generator.example_input_shapes = [(64, 100, 1, 1)]  # type: ignore[attr-defined]


def dcgan_discriminator(ndf: int = 64, nc: int = 3) -> nn.Sequential:
    """The matching DCGAN discriminator (ordinary convolutions; torch runs it in both arms of a comparison)."""
    return nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(), nn.Flatten(0))


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNetDecoder(nn.Module):
    """The expanding half of U-Net (Ronneberger et al. 2015): per level a 2x2 stride-2 up-convolution halving the
    channels, then a block of two 3x3 convolutions (with batch norm, as common re-implementations do), and a 1x1
    convolution to the classes. It takes the bottleneck features only: the encoder's skip connections are left out
    (so each block sees the up-convolution's channels, not twice as many) to keep the model one input."""

    def __init__(self, channels: tuple[int, ...] = (1024, 512, 256, 128, 64), classes: int = 2) -> None:
        super().__init__()
        self.ups = nn.ModuleList(nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in channels[:-1])
        self.blocks = nn.ModuleList(_conv_block(c // 2, n) for c, n in pairwise(channels))
        self.head = nn.Conv2d(channels[-1], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for up, block in zip(self.ups, self.blocks):
            x = block(up(x))
        return self.head(x)


def unet_decoder(channels: tuple[int, ...] = (1024, 512, 256, 128, 64), classes: int = 2) -> UNetDecoder:
    """U-Net's decoder from a (N, channels[0], h, w) bottleneck to (N, classes, 16h, 16w)."""
    return UNetDecoder(channels, classes)


unet_decoder.example_input_shapes = [(1, 1024, 8, 8)]  # type: ignore[attr-defined]


class FCN8sHead(nn.Module):
    """FCN-8s's upsampling head (Long et al. 2015): class scores of conv7 (stride 32) upsampled 2x by a k4 s2
    transposed convolution, fused with pool4's scores, upsampled 2x again, fused with pool3's scores, and upsampled
    8x by a k16 s8 transposed convolution to the image size. Transposed convolutions start as bilinear upsampling
    and have no bias, as in FCN; paddings 1 and 4 give exact 2x/8x sizes (the original pads the image by 100 and
    crops instead)."""

    def __init__(self, classes: int = 21, pool3: int = 256, pool4: int = 512, conv7: int = 4096) -> None:
        super().__init__()
        self.score_fr = nn.Conv2d(conv7, classes, 1)
        self.score_pool4 = nn.Conv2d(pool4, classes, 1)
        self.score_pool3 = nn.Conv2d(pool3, classes, 1)
        self.upscore2 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(classes, classes, 4, stride=2, padding=1, bias=False)
        self.upscore8 = nn.ConvTranspose2d(classes, classes, 16, stride=8, padding=4, bias=False)
        import autotune
        with torch.no_grad():
            for layer, factor in ((self.upscore2, 2), (self.upscore_pool4, 2), (self.upscore8, 8)):
                layer.weight.copy_(torch.from_numpy(autotune.bilinear_kernel(factor, classes)))

    def forward(self, pool3: torch.Tensor, pool4: torch.Tensor, conv7: torch.Tensor) -> torch.Tensor:
        x = self.upscore2(self.score_fr(conv7)) + self.score_pool4(pool4)
        x = self.upscore_pool4(x) + self.score_pool3(pool3)
        return self.upscore8(x)


def fcn8s_head(classes: int = 21, pool3: int = 256, pool4: int = 512, conv7: int = 4096) -> FCN8sHead:
    """FCN-8s's head; inputs pool3 (N, 256, H/8, W/8), pool4 (N, 512, H/16, W/16), conv7 (N, 4096, H/32, W/32)."""
    return FCN8sHead(classes, pool3, pool4, conv7)


fcn8s_head.example_input_shapes = [(1, 256, 64, 64), (1, 512, 32, 32), (1, 4096, 16, 16)]  # type: ignore[attr-defined]

MODELS = {"dcgan_generator": dcgan_generator, "unet_decoder": unet_decoder, "fcn8s_head": fcn8s_head}
