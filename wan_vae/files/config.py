"""The Wan VAE configurations: one dataclass is the single source of truth for sizes.

Values from shared/reference/wan_reference.md sections 1.2 and 2.1 (identical in the original Wan code,
in diffusers and in ComfyUI); Qwen-Image 2.1's image VAE from diffusers 0.42's AutoencoderKLQwenImage21.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip

QWEN_IMAGE21_LATENTS_MEAN = (
    0.5126, 0.7721, -0.0631, 1.3506, -0.7855, -2.1025, -0.3458, 1.3722,
    1.8873, -1.7177, -0.651, 0.2732, 0.7562, -0.6163, -1.0277, 3.8363,
    2.021, 0.0472, 0.932, 2.0087, 2.4954, -0.1391, -1.4249, 1.8464,
    -0.5236, 1.2826, 3.7046, -1.3035, 2.7286, -1.4518, -1.9036, -1.9955,
    -0.0342, -1.0265, -0.7636, 3.0555, 0.0746, -3.0751, -0.1076, 1.7376,
    -1.0914, -1.9435, -0.2784, -1.368, 0.4809, -0.4433, 0.3764, 0.5729,
    -2.0595, 1.096, -1.326, -2.0211, -5.0179, 0.5275, 4.0162, 1.8505,
    0.3026, 1.9373, 1.4937, 0.2632, 0.5547, -1.7121, -0.1562, 0.0304,
)  # fmt: skip
QWEN_IMAGE21_LATENTS_STD = (
    3.2001, 3.2936, 3.4321, 3.0091, 3.1061, 4.0379, 4.0705, 3.791,
    3.0785, 3.65, 3.9308, 3.0904, 2.8778, 3.7675, 3.732, 5.0756,
    3.2864, 4.0397, 3.1317, 4.0443, 2.9249, 3.9454, 3.0988, 4.2489,
    3.4896, 3.8513, 3.9323, 3.4719, 3.7498, 4.283, 3.5694, 4.2467,
    3.9037, 3.2947, 5.077, 3.5075, 3.27, 3.4767, 2.8063, 5.1125,
    3.5327, 4.7833, 3.1286, 4.1819, 3.8527, 3.8312, 3.5605, 4.3875,
    3.9624, 4.0168, 3.5643, 4.055, 5.5614, 4.2963, 4.408, 3.4959,
    3.8747, 3.7608, 3.5735, 3.149, 3.7662, 3.6746, 3.4563, 3.8161,
)  # fmt: skip


@dataclass(frozen=True)
class WanVAEConfig:
    """Sizes of one Wan VAE.

    `dim` is the encoder's base width and `decoder_dim` the decoder's; stage widths are these times
    `dim_mult` (decoder: reversed, see `decoder_dims`). The checkpoint loader keeps `version`,
    `z_dim` and the layout, and reads the two widths from tensor shapes, so channel-pruned variants
    and the tests' reduced configs use the same code as the real files.
    """

    version: str  # "2.1", "2.2", or "qwen-image-2.1" (Qwen-Image 2.1's image VAE)
    dim: int
    decoder_dim: int
    z_dim: int
    patch_size: int  # 1 (2.1) or 2 (2.2: pixels are folded 2x2 into channels before the encoder)
    is_residual: bool  # 2.2 stages carry a parameter-free shortcut (AvgDown3D / DupUp3D)
    latents_mean: tuple[float, ...] = field(repr=False)
    latents_std: tuple[float, ...] = field(repr=False)
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    in_channels: int = 3  # pixel channels the encoder takes: 3 (RGB) or 4 (RGBA: Qwen-Image-Layered's VAE)
    out_channels: int = 3  # pixel channels the decoder gives
    upscale: int = 1  # s > 1: an upscale decoder, whose 3 * s * s head channels are pixel-shuffled into s x the pixels
    has_encoder: bool = True  # False for decoder-only files (decoder fine-tunes)
    time_kernel: int = 3  # 1: 2-D kernels everywhere (Qwen-Image 2.1): an image VAE, one frame per latent

    @property
    def images_only(self) -> bool:
        """An image VAE: every latent is one picture (its time convs never meet a second frame)."""
        return self.time_kernel == 1

    @property
    def title(self) -> str:
        """"Wan 2.1" / "Wan 2.2" / "Qwen-Image 2.1": the family in a user's words."""
        return "Qwen-Image 2.1" if self.version == "qwen-image-2.1" else f"Wan {self.version}"

    @property
    def encoder_in_channels(self) -> int:
        """Channels of the encoder's entry conv: the pixel channels folded by the patch size."""
        return self.in_channels * self.patch_size**2

    @property
    def decoder_out_channels(self) -> int:
        """Channels of the decoder's head: pixel channels folded by the patch size, times upscale^2."""
        return self.out_channels * self.patch_size**2 * self.upscale**2

    @property
    def encoder_dims(self) -> list[int]:
        return [self.dim * m for m in (1, *self.dim_mult)]

    @property
    def decoder_dims(self) -> list[int]:
        return [self.decoder_dim * m for m in (self.dim_mult[-1], *self.dim_mult[::-1])]

    @property
    def temporal_upsample(self) -> tuple[bool, ...]:
        return self.temporal_downsample[::-1]

    @property
    def spatial_scale(self) -> int:
        """Pixels per latent cell along each axis (8 or 16)."""
        return 2 ** (len(self.dim_mult) - 1) * self.patch_size

    @property
    def output_scale(self) -> int:
        """Decoded pixels per latent cell along each axis: spatial_scale, times the upscale decoder's factor."""
        return self.spatial_scale * self.upscale

    @property
    def temporal_scale(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    def name(self) -> str:
        """What the file is, in a user's words: "Wan 2.1 VAE", "Wan 2.1 RGBA VAE", "Wan 2.1 VAE, 2x upscale decoder"."""
        rgba = " RGBA" if 4 in (self.in_channels, self.out_channels) else ""
        extra = [f"{self.upscale}x upscale decoder"] if self.upscale > 1 else []
        extra += [] if self.has_encoder else ["decoder only"]
        if self.images_only:
            rgba = ""  # RGBA is what it is: saying so would suggest a variant
        return ", ".join([f"{self.title}{rgba} VAE", *extra])

    def with_widths(self, dim: int, decoder_dim: int) -> WanVAEConfig:
        return replace(self, dim=dim, decoder_dim=decoder_dim)

    def with_channels(self, in_channels: int, out_channels: int, upscale: int, has_encoder: bool) -> WanVAEConfig:
        return replace(self, in_channels=in_channels, out_channels=out_channels, upscale=upscale, has_encoder=has_encoder)

    def pruning(self) -> str:
        """"" for the standard widths, else how much of the decoder is left (LightX2V's LightVAE keeps 25 %)."""
        share = self.decoder_dim / CONFIGS[self.version].decoder_dim
        if share >= 1:
            return ""
        known = " (LightX2V's LightVAE: faster, lossy)" if round(share, 4) in (0.25, 0.5) else ""
        return f"pruned to {share:.0%} of its decoder channels{known}"


WAN21 = WanVAEConfig(
    version="2.1", dim=96, decoder_dim=96, z_dim=16, patch_size=1, is_residual=False,
    latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD,
)  # fmt: skip
WAN22 = WanVAEConfig(
    version="2.2", dim=160, decoder_dim=256, z_dim=48, patch_size=2, is_residual=True,
    latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD,
)  # fmt: skip

# Qwen-Image 2.1's image VAE: the Wan 2.2 residual network with 2-D kernels, five stages (16x), no patches, RGBA
# in and out, 64 latent channels (diffusers AutoencoderKLQwenImage21; ComfyUI's file keeps 5-D weights of time size 1).
QWEN_IMAGE21 = WanVAEConfig(
    version="qwen-image-2.1", dim=96, decoder_dim=144, z_dim=64, patch_size=1, is_residual=True,
    latents_mean=QWEN_IMAGE21_LATENTS_MEAN, latents_std=QWEN_IMAGE21_LATENTS_STD, dim_mult=(1, 2, 4, 8, 8),
    temporal_downsample=(False, True, True, True), in_channels=4, out_channels=4, time_kernel=1,
)  # fmt: skip

CONFIGS = {"2.1": WAN21, "2.2": WAN22, "qwen-image-2.1": QWEN_IMAGE21}

# What users call the model that makes latents of each width; used in error messages.
MODELS_BY_LATENT_CHANNELS = {
    16: ("Wan 2.1", "Wan 2.1 / Wan 2.2 14B (T2V, I2V) / Qwen-Image"),
    48: ("Wan 2.2", "Wan 2.2 TI2V-5B"),
    64: ("Qwen-Image 2.1", "Qwen-Image 2.1"),
}
