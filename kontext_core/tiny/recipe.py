"""The kontext-tiny configuration: the FLUX.1 Kontext architecture at a CPU-friendly size.

64×64 pixels; the autoencoder downsamples 4× (like FLUX) into 32 channels (FLUX has 16: at this
size twice the channels is what lets product edges survive the round trip), so one token is an
8×8-pixel patch and an edit sees 64 target + 64 context tokens. The text encoders are small T5 and
CLIP models with fixed random weights (like FLUX, whose encoders are frozen) over a word-level
tokenizer built from the synthetic instruction vocabulary.
"""

from __future__ import annotations

from typing import Any

from ..synthetic import instruction_vocabulary

IMAGE_SIZE = 64


def tiny_preset_dict(scale_factor: float = 1.0, shift_factor: float = 0.0) -> dict[str, Any]:
    return {
        "name": "kontext-tiny",
        "description": "FLUX.1 Kontext architecture at 64x64, trained on synthetic product photos (see MODEL_CARD.md).",
        "transformer": {"in_channels": 128, "out_channels": 128, "vec_in_dim": 64, "context_in_dim": 64,
                        "hidden_size": 192, "mlp_ratio": 4.0, "num_heads": 6, "depth": 2,
                        "depth_single_blocks": 4, "axes_dim": [8, 12, 12], "theta": 10000,
                        "qkv_bias": True, "guidance_embed": True},
        "autoencoder": {"in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1,
                        "z_channels": 32, "scale_factor": scale_factor, "shift_factor": shift_factor,
                        "norm_groups": 8},
        "text": {"t5_max_length": 24, "clip_max_length": 24,
                 "t5_config": {"d_model": 64, "d_ff": 128, "d_kv": 16, "num_heads": 4, "num_layers": 2,
                               "relative_attention_num_buckets": 16, "relative_attention_max_distance": 32,
                               "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0},
                 "clip_config": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                                 "num_hidden_layers": 2, "max_position_embeddings": 24, "projection_dim": 64,
                                 "attention_dropout": 0.0, "dropout": 0.0},
                 "vocabulary": instruction_vocabulary()},
        "sampler": {"steps": 12, "guidance": 2.5},
        "resolution": {"kind": "fixed", "size": [IMAGE_SIZE, IMAGE_SIZE]},
    }
