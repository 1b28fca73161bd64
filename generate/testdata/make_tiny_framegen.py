#!/usr/bin/python3
"""Export generate/testdata/tiny-framegen: a tiny random-weight framegen bundle.

It has the exact interface of models/framegen (see /work/shared spec, "models/framegen"):

    patch_tokens  float32 [B, K, 144, 192]   the last K frames, oldest first, normalised
    next_tokens   float32 [B, 144, 192]      the predicted next frame, normalised space

96x96 RGB, 8x8 patches, K = 3. The weights are random (fixed seed); the model
is "persistence plus a small learned residual": next = last + 0.05 * f(window),
with f a one-layer Transformer over all K*144 patch embeddings. It exists to
test the Go side (loading, normalisation, ORT, heatmap, PNG, Object Store),
not to predict anything well.

expected/ holds two test windows and torch's output for them:
    tokens_u8.bin        uint8 [2, K, 144, 192]   frame tokens (frame.Tokenize layout)
    next_tokens_f32.bin  float32 little endian [2, 144, 192]

Run with Debian's torch:  /usr/bin/python3 generate/testdata/make_tiny_framegen.py
"""

import json
import os

import numpy as np
import torch
from torch import nn

SEED = 20261130
SIZE, PATCH, K = 96, 8, 3
N, D = (SIZE // PATCH) ** 2, PATCH * PATCH * 3
MEAN = STD = [0.5, 0.5, 0.5]
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tiny-framegen")


class TinyFramegen(nn.Module):
    def __init__(self, dim=32, heads=2):
        super().__init__()
        self.embed = nn.Linear(D, dim)
        self.pos = nn.Parameter(torch.randn(1, K * N, dim) * 0.02)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, D)
        self.heads = heads

    def forward(self, patch_tokens):
        b = patch_tokens.shape[0]
        x = self.embed(patch_tokens.reshape(b, K * N, D)) + self.pos
        h = self.norm1(x)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        hd = q.shape[-1] // self.heads

        def split(t):
            return t.reshape(b, K * N, self.heads, hd).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        a = ((q @ k.transpose(-2, -1)) * hd ** -0.5).softmax(dim=-1)
        x = x + self.proj((a @ v).transpose(1, 2).reshape(b, K * N, -1))
        x = x + self.mlp(self.norm2(x))
        last = patch_tokens[:, K - 1]
        return last + 0.05 * torch.tanh(self.head(x[:, (K - 1) * N:]))


def tokenize(img):
    h, w, _ = img.shape
    g = img.reshape(h // PATCH, PATCH, w // PATCH, PATCH, 3).transpose(0, 2, 1, 3, 4)
    return g.reshape(N, D)


def normalise(u8):
    x = u8.astype(np.float64) / 255.0
    # the last axis of a token is (y*P+x)*3+c: channel = index % 3
    mean = np.tile(np.array(MEAN), D // 3)
    std = np.tile(np.array(STD), D // 3)
    return ((x - mean) / std).astype(np.float32)


def windows(rng):
    """Two windows of K frames: a red square moving right on a gradient, and noise."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    base = np.stack([x * 255 // (SIZE - 1), y * 255 // (SIZE - 1), (x + y) % 256], axis=-1).astype(np.uint8)
    moving = []
    for i in range(K):
        img = base.copy()
        img[30:50, 10 + 8 * i:30 + 8 * i] = (230, 20, 20)
        moving.append(tokenize(img))
    noise = [tokenize(rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(K)]
    return np.stack([np.stack(moving), np.stack(noise)])


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def main():
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    os.makedirs(os.path.join(OUT, "expected"), exist_ok=True)
    model = TinyFramegen().eval()
    torch.onnx.export(model, (torch.zeros(1, K, N, D),), os.path.join(OUT, "model.onnx"),
                      input_names=["patch_tokens"], output_names=["next_tokens"],
                      dynamic_axes={"patch_tokens": {0: "batch_size"}, "next_tokens": {0: "batch_size"}},
                      opset_version=17, do_constant_folding=True)
    write_json(os.path.join(OUT, "config.json"), {
        "architectures": ["PatchlineFramegen"],
        "model_type": "patchline-framegen",
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": SIZE,
        "patch_size": PATCH,
        "num_channels": 3,
        "num_frames": K,
        "patchline": {
            "name": "tiny-framegen",
            "task": "framegen",
            "input": "patch_tokens",
            "resize": "stretch",
            "anomaly_threshold": 0.5,
        },
    })
    write_json(os.path.join(OUT, "preprocessor_config.json"), {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": MEAN,
        "image_processor_type": "ViTImageProcessor",
        "image_std": STD,
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": SIZE, "width": SIZE},
        "patch_size": PATCH,
    })
    u8 = windows(rng)
    with torch.no_grad():
        out = model(torch.from_numpy(normalise(u8)))
    u8.astype(np.uint8).tofile(os.path.join(OUT, "expected", "tokens_u8.bin"))
    out.numpy().astype("<f4").tofile(os.path.join(OUT, "expected", "next_tokens_f32.bin"))
    print("wrote", OUT, "params", sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main()
