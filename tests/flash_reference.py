"""Flash-VAED's decode written out from reading its `models/wan/model_hybrid_aggressive.py` (Aoko955/Flash-VAED at
9ed87ee): plain functions over the state dict, one latent frame at a time with a cache per causal conv, as its
`WanVAE.decode` loops. Flash-VAED is not on the package registry, so the pack's decoder is checked against this.

What the reading found, and this keeps: latents normalized with Wan 2.1's mean and std are mapped back as
z / (1 / std) + mean, then the 1x1x1 `conv2`; causal 3x3x3 convs see the last two input frames (zeros before the
video); a temporal upsample passes frame 0 alone and runs its time conv from frame 1 on, with zeros (not frame 0)
as history; frames 2i and 2i + 1 come from its first and second half of channels; the upsampling blocks from index 8
and the 2-D upsample run per frame; the output is clamped to [-1, 1]. (Its cache reset after latent frame 20 is a
limit of its loop, not kept: the tests decode fewer frames.)
"""

import torch
import torch.nn.functional as F

WAN21_MEAN = torch.tensor([-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                           0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921])  # fmt: skip
WAN21_STD = torch.tensor([2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                          3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160])  # fmt: skip


class Reference:
    def __init__(self, sd: dict[str, torch.Tensor]) -> None:
        self.sd = {k: v.double() for k, v in sd.items()}
        self.history: dict[str, torch.Tensor] = {}

    def w(self, name):
        return self.sd[name + ".weight"], self.sd.get(name + ".bias")

    def norm(self, name, x):
        return F.normalize(x, dim=1) * x.shape[1] ** 0.5 * self.sd[name + ".gamma"]

    def causal(self, name, x, groups=1):
        """A causal conv over time (kernel time 3: the last two inputs before, zeros at the start; 1: none)."""
        weight, bias = self.w(name)
        k = weight.shape[2]
        if k == 1:
            return F.conv3d(x, weight, bias, padding=(0, weight.shape[3] // 2, weight.shape[4] // 2), groups=groups)
        before = self.history.get(name, x[:, :, :0])
        padded = torch.cat([torch.zeros_like(x[:, :, :1]).expand(-1, -1, 2 - before.shape[2], -1, -1), before, x], dim=2)
        self.history[name] = padded[:, :, -2:]
        return F.conv3d(padded, weight, bias, padding=(0, weight.shape[3] // 2, weight.shape[4] // 2), groups=groups)

    def separable(self, name, x):
        return self.causal(name + ".pointwise_conv", self.causal(name + ".depthwise_conv", x, groups=x.shape[1]))

    def fast(self, name, x):
        h = self.separable(name + ".shortcut", x) if name + ".shortcut.pointwise_conv.weight" in self.sd else x
        r = self.separable(name + ".residual.2", F.silu(self.norm(name + ".residual.0", x)))
        r = self.separable(name + ".residual.6", F.silu(self.norm(name + ".residual.3", r)))
        return h + r

    def planar(self, name, x):  # x: frames [N, C, H, W]
        r = F.conv2d(F.silu(self.norm(name + ".residual.0", x)), *self.w(name + ".residual.2"), padding=1)
        r = F.conv2d(F.silu(self.norm(name + ".residual.3", r)), *self.w(name + ".residual.6"), padding=1)
        return r + F.conv2d(x, *self.w(name + ".shortcut"))

    def attention(self, name, x):  # x: frames
        n, c, h, w = x.shape
        q, k, v = F.conv2d(self.norm(name + ".norm", x), *self.w(name + ".to_qkv")).flatten(2).transpose(1, 2).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, c, h, w)
        return x + F.conv2d(out, *self.w(name + ".proj"))

    def upsample(self, name, frames):
        up = F.interpolate(frames, scale_factor=2.0, mode="nearest-exact")
        return F.conv2d(up, *self.w(name + ".resample.1"), padding=1)

    def resample3d(self, name, x, first: bool):
        if not first:
            b, c, t, h, w = x.shape
            pairs = self.causal(name + ".time_conv", x)  # history from frame 1 on (zeros before it)
            x = torch.stack((pairs[:, :c], pairs[:, c:]), dim=3).reshape(b, c, 2 * t, h, w)
        b, c, t, h, w = x.shape
        frames = self.upsample(name, x.transpose(1, 2).reshape(b * t, c, h, w))
        return frames.reshape(b, t, -1, 2 * h, 2 * w).transpose(1, 2)

    def frame(self, z, first: bool):
        x = self.causal("decoder.conv1", F.conv3d(z, *self.w("conv2")))
        x = self.fast("decoder.middle.0", x)
        b, c, t, h, w = x.shape
        x = self.attention("decoder.middle.1", x.transpose(1, 2).reshape(b * t, c, h, w)).reshape(b, t, c, h, w).transpose(1, 2)
        x = self.fast("decoder.middle.2", x)
        for i in range(8):
            name = f"decoder.upsamples.{i}"
            x = self.resample3d(name, x, first) if i in (3, 7) else self.fast(name, x)
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        for i in range(8, 15):
            name = f"decoder.upsamples.{i}"
            frames = self.upsample(name, frames) if i == 11 else self.planar(name, frames)
        x = frames.reshape(b, t, *frames.shape[1:]).transpose(1, 2)
        return self.causal("decoder.head.2", F.silu(self.norm("decoder.head.0", x)))


def reference_decode(sd: dict[str, torch.Tensor], normalized: torch.Tensor) -> torch.Tensor:
    """Normalized Wan 2.1 latents [B, 16, T, h, w] -> video [B, 3, 1 + 4(T - 1), 8h, 8w] in [-1, 1], float64."""
    ref = Reference(sd)
    z = normalized.double() / (1.0 / WAN21_STD.double()).view(1, -1, 1, 1, 1) + WAN21_MEAN.double().view(1, -1, 1, 1, 1)
    frames = [ref.frame(z[:, :, i : i + 1], first=i == 0) for i in range(z.shape[2])]
    return torch.cat(frames, dim=2).clamp_(-1, 1)
