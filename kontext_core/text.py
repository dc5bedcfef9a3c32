"""Text conditioning: T5 (last hidden state) and CLIP-L (pooled), through transformers' classes.

Real models load from local folders only (``text_encoder``/``tokenizer`` for CLIP,
``text_encoder_2``/``tokenizer_2`` for T5). Small presets build both encoders from config with a
seeded initialisation and a tokenizer made from a word list, so nothing is ever downloaded.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoTokenizer,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    PreTrainedTokenizerBase,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from .config import TextConfig
from .text_embeddings import TextEmbeddings

_CHARS = string.ascii_lowercase + string.digits + "-'.,"


def build_t5_tokenizer(words: tuple[str, ...] = ()) -> T5Tokenizer:
    """A tiny unigram T5 tokenizer: whole words from ``words``, characters as a fallback."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    seen = {p for p, _ in pieces}
    for word in sorted(set(words)):
        if f"▁{word}" not in seen:
            pieces.append((f"▁{word}", -1.0))
            seen.add(f"▁{word}")
    for ch in _CHARS:
        for piece in (ch, f"▁{ch}"):
            if piece not in seen:
                pieces.append((piece, -5.0))
                seen.add(piece)
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def build_clip_tokenizer(max_length: int) -> CLIPTokenizer:
    """A character-level CLIP BPE tokenizer (no merges)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in _CHARS:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    tok.model_max_length = max_length
    return tok


def _load_strict(model_class: type, folder: Path, dtype: torch.dtype) -> nn.Module:
    """from_pretrained, but weights missing from the folder are an error, not a random init
    (transformers only logs a warning, which would give silently wrong conditioning)."""
    model, info = model_class.from_pretrained(folder, torch_dtype=dtype, local_files_only=True,
                                              output_loading_info=True)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{folder}: {model_class.__name__} weights incomplete, {len(missing)} missing "
                         f"({shown}); re-copy that folder from the FLUX.1-Kontext-dev download")
    return model


def overflows(tokenizer: PreTrainedTokenizerBase, prompts: list[str], limit: int) -> list[bool]:
    """Whether each prompt needs more than ``limit`` tokens, special tokens included (what
    ``truncation=True, max_length=limit`` would cut)."""
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=False, verbose=False).input_ids]
    return [n > limit for n in lengths]


class TextEncoders(nn.Module):
    def __init__(self, t5: T5EncoderModel, t5_tokenizer: PreTrainedTokenizerBase, clip: CLIPTextModel,
                 clip_tokenizer: PreTrainedTokenizerBase, config: TextConfig):
        super().__init__()
        self.t5 = t5.eval()
        self.clip = clip.eval()
        self.t5_tokenizer = t5_tokenizer
        self.clip_tokenizer = clip_tokenizer
        self.config = config

    @classmethod
    def from_config(cls, config: TextConfig, seed: int) -> TextEncoders:
        """Small encoders with seeded random weights (tests and tiny presets)."""
        if config.t5_config is None or config.clip_config is None:
            raise ValueError("this preset has no text encoder configs; load the encoders from a weights folder")
        t5_tok = build_t5_tokenizer(config.vocabulary or ())
        clip_tok = build_clip_tokenizer(config.clip_max_length)
        t5_cfg = T5Config(vocab_size=len(t5_tok), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                          **config.t5_config)
        clip_cfg = CLIPTextConfig(vocab_size=len(clip_tok), bos_token_id=0, eos_token_id=1, pad_token_id=1,
                                  **config.clip_config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            t5 = T5EncoderModel(t5_cfg)
            clip = CLIPTextModel(clip_cfg)
        return cls(t5, t5_tok, clip, clip_tok, config)

    @classmethod
    def from_folders(cls, root: Path, config: TextConfig, dtype: torch.dtype) -> TextEncoders:
        """Load from a diffusers-style folder (text_encoder, tokenizer, text_encoder_2, tokenizer_2)."""
        missing = [d for d in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2") if not (root / d).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"text encoders missing under {root}: no {', '.join(missing)} folder(s). Put the CLIP-L "
                "(text_encoder, tokenizer) and T5-XXL (text_encoder_2, tokenizer_2) folders of the "
                "FLUX.1-Kontext-dev download there."
            )
        clip = _load_strict(CLIPTextModel, root / "text_encoder", dtype)
        t5 = _load_strict(T5EncoderModel, root / "text_encoder_2", dtype)
        clip_tok = AutoTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
        t5_tok = AutoTokenizer.from_pretrained(root / "tokenizer_2", local_files_only=True)
        if len(t5_tok) == 0 or len(clip_tok) == 0:
            raise ValueError(f"empty tokenizer loaded from {root}: check tokenizer/ and tokenizer_2/")
        return cls(t5, t5_tok, clip, clip_tok, config)

    def save(self, root: Path) -> None:
        self.clip.save_pretrained(root / "text_encoder")
        self.clip_tokenizer.save_pretrained(root / "tokenizer")
        self.t5.save_pretrained(root / "text_encoder_2")
        self.t5_tokenizer.save_pretrained(root / "tokenizer_2")

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextEmbeddings:
        device = next(self.t5.parameters()).device
        t5_len, clip_len = self.config.t5_max_length, self.clip_tokenizer.model_max_length
        t5_ids = self.t5_tokenizer(prompts, padding="max_length", max_length=t5_len, truncation=True,
                                   return_tensors="pt").input_ids
        clip_ids = self.clip_tokenizer(prompts, padding="max_length", max_length=clip_len, truncation=True,
                                       return_tensors="pt").input_ids
        t5_out = self.t5(input_ids=t5_ids.to(device)).last_hidden_state
        pooled = self.clip(input_ids=clip_ids.to(device)).pooler_output
        return TextEmbeddings(t5_out, pooled, overflows(self.t5_tokenizer, prompts, t5_len),
                              overflows(self.clip_tokenizer, prompts, clip_len))
