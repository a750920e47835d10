"""Wan VAE key names: original Wan / ComfyUI (`decoder.upsamples.4.residual.2.weight`) and diffusers
(`decoder.up_blocks.1.resnets.0.conv1.weight`), mapped both ways by one table generated from the network's structure.

Facts: shared/reference/wan_reference.md section 3 (key formats and the mapping).
"""

from __future__ import annotations

from .config import WanVAEConfig

# Inside a residual block: original leaf -> diffusers leaf.
RESIDUAL_LEAVES = (
    ("residual.0.gamma", "norm1.gamma"),
    ("residual.2.", "conv1."),
    ("residual.3.gamma", "norm2.gamma"),
    ("residual.6.", "conv2."),
    ("shortcut.", "conv_shortcut."),
)


def prefix_table(cfg: WanVAEConfig) -> list[tuple[str, str]]:
    """(original prefix, diffusers prefix) pairs covering every tensor of a config; the mapping as data.

    Generated from the network's structure, so the same table reads both ways.
    """
    pairs = [("conv1.", "quant_conv."), ("conv2.", "post_quant_conv.")]
    for part in ("encoder", "decoder"):
        pairs += [
            (f"{part}.conv1.", f"{part}.conv_in."),
            (f"{part}.head.0.", f"{part}.norm_out."),
            (f"{part}.head.2.", f"{part}.conv_out."),
            (f"{part}.middle.0.", f"{part}.mid_block.resnets.0."),
            (f"{part}.middle.1.", f"{part}.mid_block.attentions.0."),
            (f"{part}.middle.2.", f"{part}.mid_block.resnets.1."),
        ]
    stages = len(cfg.dim_mult)
    enc_blocks, dec_blocks = cfg.num_res_blocks, cfg.num_res_blocks + 1
    if cfg.is_residual:
        for i in range(stages):
            for j in range(enc_blocks):
                pairs.append((f"encoder.downsamples.{i}.downsamples.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
            pairs.append((f"encoder.downsamples.{i}.downsamples.{enc_blocks}.", f"encoder.down_blocks.{i}.downsampler."))
            for j in range(dec_blocks):
                pairs.append((f"decoder.upsamples.{i}.upsamples.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
            pairs.append((f"decoder.upsamples.{i}.upsamples.{dec_blocks}.", f"decoder.up_blocks.{i}.upsampler."))
    else:
        # The encoder keeps its flat numbering; the decoder's flat list is regrouped per stage.
        for n in range(stages * (enc_blocks + 1) - 1):
            pairs.append((f"encoder.downsamples.{n}.", f"encoder.down_blocks.{n}."))
        for n in range(stages * (dec_blocks + 1) - 1):
            stage, i = divmod(n, dec_blocks + 1)
            leaf = "upsamplers.0." if i == dec_blocks else f"resnets.{i}."
            pairs.append((f"decoder.upsamples.{n}.", f"decoder.up_blocks.{stage}.{leaf}"))
    # Longest first, so that "decoder.conv1." wins over "conv1.".
    return sorted(pairs, key=lambda p: -len(p[0]))


def _rename(key: str, pairs: list[tuple[str, str]], leaves: tuple[tuple[str, str], ...]) -> str | None:
    for src, dst in pairs:
        if key.startswith(src):
            rest = key[len(src) :]
            for leaf_src, leaf_dst in leaves:
                if rest.startswith(leaf_src):
                    rest = leaf_dst + rest[len(leaf_src) :]
                    break
            return dst + rest
    return None


def original_to_diffusers(keys, cfg: WanVAEConfig) -> dict[str, str]:
    """Map original key names to diffusers names; keys outside the table map to None."""
    pairs = prefix_table(cfg)
    return {k: _rename(k, pairs, RESIDUAL_LEAVES) for k in keys}


def diffusers_to_original(keys, cfg: WanVAEConfig) -> dict[str, str]:
    pairs = sorted(((d, o) for o, d in prefix_table(cfg)), key=lambda p: -len(p[0]))
    leaves = tuple((d, o) for o, d in RESIDUAL_LEAVES)
    return {k: _rename(k, pairs, leaves) for k in keys}
