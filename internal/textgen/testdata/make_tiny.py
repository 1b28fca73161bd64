#!/usr/bin/python3
"""Export the tiny random-weight caption bundle internal/textgen's tests use.

    internal/textgen/testdata/tiny/
        config.json, preprocessor_config.json, tokenizer.json
        encoder_model.onnx            patch_tokens [B,F,144,192] -> encoder_hidden_states [B,144,D]
        decoder_model.onnx            (models/train/textdecoder.py export_onnx)
        decoder_with_past_model.onnx
        expected/                     torch outputs saved at export, see meta.json

The weights are random (fixed seed) but scaled up so the logits are far
apart: greedy decoding is then stable under float rounding, so the Go tests
can require KV-cache decoding to equal no-cache decoding token for token and
Go's greedy tokens to equal torch's.

expected/ (all little endian, row-major; shapes in meta.json):
    frames_u8.bin                 uint8 [B,F,144,192] test inputs (frame.Tokenize layout)
    encoder_hidden_states_f32.bin torch encoder output for them
    decoder.*                     decoder_model: input_ids (meta.json) + enc -> logits, presents
    with_past.*                   decoder_with_past_model: input_ids + enc + decoder.presents as past
    greedy_tokens.json            torch greedy decoding (KV cache) of every input

Run with Debian's torch:  /usr/bin/python3 internal/textgen/testdata/make_tiny.py
"""

import json
import os
import sys

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "models", "train"))

import textdecoder  # noqa: E402
import tokenizer_words  # noqa: E402

SEED = 20261130
OUT = os.path.join(HERE, "tiny")
W = H = 96
PATCH = 8
N = (W // PATCH) * (H // PATCH)  # 144
TOKEN_DIM = PATCH * PATCH * 3  # 192
FRAMES = 2
ENC_DIM = 24
MAX_LENGTH = 16  # HF max_length: the generated sequence including the start token
MEAN = [0.5, 0.5, 0.5]
STD = [0.5, 0.5, 0.5]


class TinyEncoder(nn.Module):
    """Normalise uint8-valued tokens, average the frames, project, add positions."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(TOKEN_DIM, ENC_DIM)
        self.pos = nn.Parameter(torch.randn(N, ENC_DIM))

    def forward(self, patch_tokens):  # [B,F,N,192], already normalised
        return torch.tanh(self.proj(patch_tokens.mean(dim=1)) + self.pos)


def normalise(u8):
    x = torch.from_numpy(u8.astype(np.float32))
    mean = torch.tensor(MEAN).repeat(TOKEN_DIM // 3)
    std = torch.tensor(STD).repeat(TOKEN_DIM // 3)
    return (x / 255.0 - mean) / std


def random_frames(rng, b):
    """b inputs of FRAMES frames: a random colour per input, varied per patch, plus noise,
    so the inputs (and their captions) differ."""
    base = rng.integers(0, 256, size=(b, 1, 1, 1, 3)) + rng.integers(-30, 31, size=(b, 1, N, 1, 3))
    noise = rng.integers(-40, 41, size=(b, FRAMES, N, TOKEN_DIM // 3, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8).reshape(b, FRAMES, N, TOKEN_DIM)


def save(name, t):
    arr = t.detach().numpy() if isinstance(t, torch.Tensor) else t
    dtype = np.uint8 if arr.dtype == np.uint8 else np.float32
    arr.astype(dtype).tofile(os.path.join(OUT, "expected", name))
    return list(arr.shape)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    os.makedirs(os.path.join(OUT, "expected"), exist_ok=True)

    enc = TinyEncoder().eval()
    dec = textdecoder.TextDecoder(
        tokenizer_words.VOCAB_SIZE, hidden_size=32, num_layers=2, num_heads=2,
        enc_dim=ENC_DIM, max_positions=24, tie_embeddings=False,
    ).eval()
    with torch.no_grad():
        for name, p in dec.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.6 if "emb" in name else 1.5 / p.shape[1] ** 0.5)

    # Encoder graph.
    x = torch.zeros(1, FRAMES, N, TOKEN_DIM)
    torch.onnx.export(
        enc, (x,), os.path.join(OUT, "encoder_model.onnx"),
        input_names=["patch_tokens"], output_names=["encoder_hidden_states"],
        dynamic_axes={"patch_tokens": {0: "batch"}, "encoder_hidden_states": {0: "batch"}},
        opset_version=17,
    )
    textdecoder.export_onnx(dec, OUT, N, ENC_DIM, opset=17)
    tokenizer_words.write_tokenizer_json(os.path.join(OUT, "tokenizer.json"))

    config = {
        "model_type": "vision-encoder-decoder",
        "architectures": ["PatchlineCaptioner"],
        "is_encoder_decoder": True,
        "vocab_size": tokenizer_words.VOCAB_SIZE,
        "pad_token_id": tokenizer_words.PAD_ID,
        "bos_token_id": tokenizer_words.BOS_ID,
        "eos_token_id": tokenizer_words.EOS_ID,
        "decoder_start_token_id": tokenizer_words.BOS_ID,
        "max_length": MAX_LENGTH,
        "num_frames": FRAMES,
        "encoder": {"hidden_size": ENC_DIM, "num_patches": N},
        "decoder": dec.config(),
        "patchline": {"task": "caption", "input": "patch_tokens", "resize": "stretch"},
    }
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    pre = {
        "do_resize": True, "size": {"height": H, "width": W}, "resample": 2,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": MEAN, "image_std": STD, "patch_size": PATCH,
    }
    with open(os.path.join(OUT, "preprocessor_config.json"), "w") as f:
        json.dump(pre, f, indent=2)
        f.write("\n")

    # Reference outputs.
    b = 4
    frames = random_frames(rng, b)
    meta = {"frames_u8.bin": save("frames_u8.bin", frames)}
    with torch.no_grad():
        hidden = enc(normalise(frames))
        meta["encoder_hidden_states_f32.bin"] = save("encoder_hidden_states_f32.bin", hidden)

        ids = torch.tensor(rng.integers(4, tokenizer_words.VOCAB_SIZE, size=(b, 5)), dtype=torch.long)
        ids[:, 0] = tokenizer_words.BOS_ID
        logits, presents = dec(ids, hidden)
        meta["decoder.input_ids"] = ids.tolist()
        meta["decoder.logits_f32.bin"] = save("decoder.logits_f32.bin", logits)
        past = []
        for layer, (k, v) in enumerate(presents):
            meta[f"decoder.present.{layer}.key_f32.bin"] = save(f"decoder.present.{layer}.key_f32.bin", k)
            meta[f"decoder.present.{layer}.value_f32.bin"] = save(f"decoder.present.{layer}.value_f32.bin", v)
            past.append((k, v))

        nxt = torch.tensor(rng.integers(4, tokenizer_words.VOCAB_SIZE, size=(b, 1)), dtype=torch.long)
        logits, presents = dec(nxt, hidden, past)
        meta["with_past.input_ids"] = nxt.tolist()
        meta["with_past.logits_f32.bin"] = save("with_past.logits_f32.bin", logits)
        for layer, (k, v) in enumerate(presents):
            meta[f"with_past.present.{layer}.key_f32.bin"] = save(f"with_past.present.{layer}.key_f32.bin", k)
            meta[f"with_past.present.{layer}.value_f32.bin"] = save(f"with_past.present.{layer}.value_f32.bin", v)

        greedy = dec.greedy(hidden, tokenizer_words.BOS_ID, tokenizer_words.EOS_ID, MAX_LENGTH - 1)
        nocache = dec.greedy(hidden, tokenizer_words.BOS_ID, tokenizer_words.EOS_ID, MAX_LENGTH - 1, use_cache=False)
        assert torch.equal(greedy, nocache), "torch: KV-cache and no-cache greedy decoding differ"
    with open(os.path.join(OUT, "expected", "greedy_tokens.json"), "w") as f:
        json.dump(greedy.tolist(), f)
        f.write("\n")
    with open(os.path.join(OUT, "expected", "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    for row in greedy.tolist():
        print("greedy:", row, repr(tokenizer_words.decode(row)))


if __name__ == "__main__":
    main()
