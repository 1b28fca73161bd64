#!/usr/bin/python3
"""Export the tiny random-weight test bundles of the analyze package.

Both bundles use the Hugging Face layout (config.json +
preprocessor_config.json + model.onnx) and exist to test the loader, the
preprocessing, the ORT path and the post-processing, not to recognise
anything (weights are random, fixed seed):

    analyze/testdata/segment-tiny/   scene-vit-shaped, task segment
        patch_tokens  float32 [B, 144, 192]   (96x96 RGB, 8x8 patches, frame token order)
        patch_logits  float32 [B, 144, 13]    class 0 = background
        scene_logits  float32 [B, 12]
    analyze/testdata/vit-hf-tiny/    an optimum-style export of a HF ViT classifier
        pixel_values  float32 [B, 3, 64, 64]  (CHW, ImageNet mean/std)
        logits        float32 [B, 5]

Each bundle gets expected/ with two test frames and torch's outputs for them:
    tokens_u8.bin          uint8 [2, N, P*P*3] frame tokens (frame.Tokenize layout)
    <output>_f32.bin       float32 little endian, torch's output for those frames

analyze's Go tests feed the same tokens through ONNX Runtime and require
max |ORT - torch| <= 1e-4.

Run with Debian's torch:  /usr/bin/python3 models/train/make_test_bundles.py
"""

import json
import os

import numpy as np
import torch
from torch import nn

SEED = 20261129
HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "analyze", "testdata")

COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle"]
OBJECTS = [f"{c} {s}" for c in COLOURS for s in SHAPES]  # 12 classes, colour-major


class Attention(nn.Module):
    """Multi-head self-attention written with plain matmuls (exports to basic ONNX ops)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape

        def split(t):
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, n, d))


class Layer(nn.Module):
    """A pre-norm Transformer encoder layer, as in HF ViTLayer."""

    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(dim, eps=1e-12)
        self.attention = Attention(dim, heads)
        self.layernorm_after = nn.LayerNorm(dim, eps=1e-12)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attention(self.layernorm_before(x))
        return x + self.mlp(self.layernorm_after(x))


class SegmentTiny(nn.Module):
    """scene-vit's interface: patch tokens in, per-patch class logits and
    scene-level multi-label logits out."""

    def __init__(self, n, token_dim, dim, classes, scene):
        super().__init__()
        self.embed = nn.Linear(token_dim, dim)
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.layers = nn.Sequential(Layer(dim, 2, 2 * dim))
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.patch_head = nn.Linear(dim, classes)
        self.scene_head = nn.Linear(dim, scene)

    def forward(self, patch_tokens):
        x = self.norm(self.layers(self.embed(patch_tokens) + self.pos))
        return self.patch_head(x), self.scene_head(x.mean(dim=1))


class ViTClassifierTiny(nn.Module):
    """The shape of HF ViTForImageClassification: conv patch embedding, CLS
    token, learned positions, encoder, layernorm, linear head on CLS."""

    def __init__(self, size, patch, dim, layers, heads, mlp, labels):
        super().__init__()
        self.projection = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.position_embeddings = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.encoder = nn.Sequential(*[Layer(dim, heads, mlp) for _ in range(layers)])
        self.layernorm = nn.LayerNorm(dim, eps=1e-12)
        self.classifier = nn.Linear(dim, labels)

    def forward(self, pixel_values):
        x = self.projection(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position_embeddings
        x = self.layernorm(self.encoder(x))
        return self.classifier(x[:, 0])


def tokenize(img, patch):
    """frame.Tokenize: patch-major (grid row-major), within a patch rows top to
    bottom, pixels left to right, RGB interleaved."""
    h, w, _ = img.shape
    g = img.reshape(h // patch, patch, w // patch, patch, 3).transpose(0, 2, 1, 3, 4)
    return g.reshape((h // patch) * (w // patch), patch * patch * 3)


def normalise(u8, rescale, mean, std):
    """(u8*rescale - mean[c]) / std[c] over the last axis of length 3."""
    x = u8.astype(np.float64) * rescale
    return ((x - np.array(mean)) / np.array(std)).astype(np.float32)


def test_images(rng, size):
    """Two RGB frames: coloured blocks on a gradient, and uniform noise."""
    y, x = np.mgrid[0:size, 0:size]
    img0 = np.stack([x * 255 // (size - 1), y * 255 // (size - 1), (x + y) % 256], axis=-1).astype(np.uint8)
    q = size // 4
    img0[q:2 * q, q:2 * q] = (230, 20, 20)
    img0[2 * q:3 * q + q // 2, 2 * q:3 * q] = (20, 20, 230)
    img1 = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return [img0, img1]


def id2label(names):
    return {str(i): n for i, n in enumerate(names)}


def label2id(names):
    return {n: i for i, n in enumerate(names)}


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def export(model, args, path, input_name, output_names):
    axes = {input_name: {0: "batch_size"}}
    axes.update({o: {0: "batch_size"} for o in output_names})
    torch.onnx.export(model, args, path, input_names=[input_name], output_names=output_names,
                      dynamic_axes=axes, opset_version=17, do_constant_folding=True)


def save_expected(out, tokens, outputs):
    exp = os.path.join(out, "expected")
    os.makedirs(exp, exist_ok=True)
    np.stack(tokens).astype(np.uint8).tofile(os.path.join(exp, "tokens_u8.bin"))
    for name, t in outputs.items():
        t.numpy().astype("<f4").tofile(os.path.join(exp, f"{name}_f32.bin"))


def preprocessor(size, patch, mean, std, **extra):
    p = {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": mean,
        "image_processor_type": "ViTImageProcessor",
        "image_std": std,
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": size, "width": size},
    }
    if patch:
        p["patch_size"] = patch
    p.update(extra)
    return p


def make_segment(rng):
    size, patch = 96, 8
    n, token_dim = (size // patch) ** 2, patch * patch * 3
    mean = std = [0.5, 0.5, 0.5]
    labels = ["background"] + OBJECTS
    out = os.path.join(TESTDATA, "segment-tiny")
    os.makedirs(out, exist_ok=True)
    model = SegmentTiny(n, token_dim, 32, len(labels), len(OBJECTS)).eval()
    export(model, (torch.zeros(1, n, token_dim),), os.path.join(out, "model.onnx"),
           "patch_tokens", ["patch_logits", "scene_logits"])
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["PatchlineSceneViT"],
        "model_type": "vit",
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": size,
        "patch_size": patch,
        "num_channels": 3,
        "id2label": id2label(labels),
        "label2id": label2id(labels),
        "patchline": {
            "name": "segment-tiny",
            "task": "segment",
            "input": "patch_tokens",
            "resize": "stretch",
            "outputs": {"patch_logits": "patch_logits", "scene_logits": "scene_logits"},
            "scene_id2label": id2label(OBJECTS),
        },
    })
    write_json(os.path.join(out, "preprocessor_config.json"), preprocessor(size, patch, mean, std))
    tokens = [tokenize(img, patch) for img in test_images(rng, size)]
    x = torch.from_numpy(normalise(np.stack(tokens).reshape(2, n, token_dim // 3, 3), 1 / 255, mean, std)
                         .reshape(2, n, token_dim))
    with torch.no_grad():
        patch_logits, scene_logits = model(x)
    save_expected(out, tokens, {"patch_logits": patch_logits, "scene_logits": scene_logits})
    print("wrote", out)


def make_vit_hf(rng):
    size, patch = 64, 16
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    labels = ["tabby cat", "golden retriever", "school bus", "espresso", "volcano"]
    out = os.path.join(TESTDATA, "vit-hf-tiny")
    os.makedirs(out, exist_ok=True)
    model = ViTClassifierTiny(size, patch, 32, 2, 2, 64, len(labels)).eval()
    export(model, (torch.zeros(1, 3, size, size),), os.path.join(out, "model.onnx"), "pixel_values", ["logits"])
    # What optimum-cli export onnx --model <a ViTForImageClassification> writes:
    # the transformers config (no "patchline" key) and the image processor's.
    write_json(os.path.join(out, "config.json"), {
        "_name_or_path": "patchline/vit-hf-tiny",
        "architectures": ["ViTForImageClassification"],
        "attention_probs_dropout_prob": 0.0,
        "encoder_stride": patch,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "hidden_size": 32,
        "id2label": id2label(labels),
        "image_size": size,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "label2id": label2id(labels),
        "layer_norm_eps": 1e-12,
        "model_type": "vit",
        "num_attention_heads": 2,
        "num_channels": 3,
        "num_hidden_layers": 2,
        "patch_size": patch,
        "qkv_bias": True,
        "torch_dtype": "float32",
        "transformers_version": "4.44.2",
    })
    write_json(os.path.join(out, "preprocessor_config.json"), preprocessor(size, None, mean, std))
    imgs = test_images(rng, size)
    tokens = [tokenize(img, patch) for img in imgs]
    x = torch.from_numpy(normalise(np.stack(imgs), 1 / 255, mean, std).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        logits = model(x)
    save_expected(out, tokens, {"logits": logits})
    print("wrote", out)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    make_segment(rng)
    make_vit_hf(rng)


if __name__ == "__main__":
    main()
