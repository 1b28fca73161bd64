#!/usr/bin/python3
"""scene-vit: per-patch segmentation and scene labels, fine-tuned from the
video encoder framegen pretrained; exported as models/scene-vit, and the
fine-tuned weights saved to .cache/models/scene_vit.pt for
train_caption.py.

Input: one frame's patch tokens [B, 144, 192] exactly as the decode stage
publishes them (normalised). Inside the graph the frame is fed to the video
encoder as a still video (3 copies), which is how the pretrained encoder is
reused unchanged. Outputs: patch_logits [B, 144, 13] (background + colour ×
shape) and scene_logits [B, 12] (which object classes the frame shows).

With --scratch it trains the same network from scratch with the same budget
instead, so the model card states what pretraining bought.

    /usr/bin/python3 models/train/train_scene_vit.py            fine-tune, export
    /usr/bin/python3 models/train/train_scene_vit.py --scratch  the baseline
"""

import os
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world as W  # noqa: E402

OUT = os.path.join(W.ROOT, "models", "scene-vit")
CACHE = W.CACHE
STEPS = int(os.environ.get("SCENE_VIT_STEPS", "2500"))
BATCH = 32
LR = 1e-3
SEED = 2
CLASSES = 13


class SceneViT(nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc
        self.patch_head = nn.Linear(enc.dim, CLASSES)
        self.scene_head = nn.Linear(enc.dim, CLASSES - 1)

    def forward(self, patch_tokens):  # [B, N, DTOK] → [B, N, 13], [B, 12]
        b, n, t = patch_tokens.shape
        still = patch_tokens.unsqueeze(1).expand(b, self.enc.frames, n, t)
        h = self.enc(still)
        return self.patch_head(h), self.scene_head(h.mean(1))


def scene_targets(cls):
    """[B, G, G] class maps → [B, 12] presence of each object class."""
    flat = cls.reshape(cls.shape[0], -1)
    return torch.stack([(flat == c).any(1) for c in range(1, CLASSES)], 1).float()


def train(model, tok, cls, weights, tag):
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    rng = np.random.default_rng(SEED)
    t = time.time()
    for step in range(STEPS):
        W.cosine_lr(opt, step, STEPS, LR)
        j = rng.integers(0, len(tok), BATCH)
        x = W.normalise(tok[j])
        y = torch.from_numpy(cls[j].astype(np.int64)).reshape(BATCH, -1)
        pl, sl = model(x)
        loss = F.cross_entropy(pl.reshape(-1, CLASSES), y.reshape(-1), weight=weights) \
            + F.binary_cross_entropy_with_logits(sl, scene_targets(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == STEPS - 1:
            W.log(f"{tag} step {step} loss {loss.item():.4f} ({time.time() - t:.0f}s)")
    model.eval()
    return time.time() - t


def evaluate(model, tok, cls):
    preds, scene_ok = [], []
    with torch.no_grad():
        for j in range(0, len(tok), 128):
            pl, sl = model(W.normalise(tok[j:j + 128]))
            preds.append(pl.argmax(-1).numpy())
            y = torch.from_numpy(cls[j:j + 128].astype(np.int64)).reshape(len(pl), -1)
            scene_ok.append(((sl > 0).float() == scene_targets(y)).float().mean().item())
    pred = np.concatenate(preds)
    true = cls.reshape(len(cls), -1)
    return {"patch_macro_f1": W.macro_f1(pred, true, CLASSES),
            "patch_accuracy": float((pred == true).mean()),
            "scene_label_accuracy": float(np.mean(scene_ok))}


def main():
    W.setup(SEED)
    _, fr, cl, _ = W.dataset("train", W.TRAIN_SEED, 240, 64)
    _, vfr, vcl, _ = W.dataset("val", W.VAL_SEED, 16, 64)
    tok = W.tokenize(fr.reshape(-1, W.HEIGHT, W.WIDTH, 3))
    cls = cl.reshape(-1, W.GRID, W.GRID)
    vtok = W.tokenize(vfr.reshape(-1, W.HEIGHT, W.WIDTH, 3))
    vcls = vcl.reshape(-1, W.GRID, W.GRID)
    freq = np.bincount(cls.ravel(), minlength=CLASSES) + 1
    weights = torch.tensor((freq.sum() / freq) ** 0.5, dtype=torch.float32)
    weights /= weights.mean()

    if "--scratch" in sys.argv:
        # The baseline: the same network from random init, same budget.
        torch.manual_seed(SEED)
        scratch = SceneViT(W.VideoEncoder())
        t_sc = train(scratch, tok, cls, weights, "scratch")
        m_sc = evaluate(scratch, vtok, vcls)
        W.log(f"from scratch: {m_sc}")
        W.update_metrics(OUT, {"from_scratch": m_sc, "train_seconds_scratch": round(t_sc)})
        return
    enc = W.VideoEncoder()
    enc.load_state_dict(torch.load(os.path.join(CACHE, "framegen_encoder.pt")))
    model = SceneViT(enc)
    W.log(f"scene-vit: {W.params(model)} parameters, {STEPS} steps of {BATCH}")
    t_ft = train(model, tok, cls, weights, "fine-tune")
    m_ft = evaluate(model, vtok, vcls)
    W.log(f"fine-tuned: {m_ft}")
    # train_caption.py starts here: its encoder and patch-class head already know the classes.
    torch.save(model.state_dict(), os.path.join(CACHE, "scene_vit.pt"))

    os.makedirs(os.path.join(OUT, "testdata"), exist_ok=True)
    W.export(model, (torch.zeros(1, W.N, W.DTOK),), os.path.join(OUT, "model.onnx"), ["patch_tokens"],
             ["patch_logits", "scene_logits"],
             {"patch_tokens": {0: "batch"}, "patch_logits": {0: "batch"}, "scene_logits": {0: "batch"}})
    xr = vtok[[3, 200]]
    xr.astype(np.uint8).tofile(os.path.join(OUT, "testdata", "tokens_u8.bin"))
    with torch.no_grad():
        pl, sl = model(W.normalise(xr))
    W.save_f32(os.path.join(OUT, "testdata", "patch_logits_f32.bin"), pl)
    W.save_f32(os.path.join(OUT, "testdata", "scene_logits_f32.bin"), sl)
    names = [n for n in _class_names()]
    W.write_json(os.path.join(OUT, "config.json"), {
        "model_type": "patchline-scene-vit",
        "architectures": ["PatchlineSceneViT"],
        "image_size": W.WIDTH,
        "patch_size": W.PATCH,
        "num_channels": 3,
        "hidden_size": enc.dim,
        "num_hidden_layers": len(enc.blocks),
        "num_attention_heads": 4,
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
        "patchline": {
            "task": "segment",
            "input": "patch_tokens",
            "resize": "stretch",
            "outputs": {"patch_logits": "patch_logits", "scene_logits": "scene_logits"},
            "scene_id2label": {str(i - 1): n for i, n in enumerate(names) if i > 0},
            "score_threshold": 0.7,
            "min_region_patches": 3,
        },
    })
    W.write_json(os.path.join(OUT, "preprocessor_config.json"), W.preprocessor_config())

    W.update_metrics(OUT, {"fine_tuned": m_ft, "parameters": W.params(model), "steps": STEPS, "batch": BATCH,
                    "train_seconds_fine_tune": round(t_ft), **W.threads(),
                    "train_frames": int(len(tok))})



def _class_names():
    colors = ["red", "green", "blue", "yellow"]
    shapes = ["circle", "square", "triangle"]
    return ["background"] + [f"{c} {s}" for c in colors for s in shapes]


if __name__ == "__main__":
    main()
