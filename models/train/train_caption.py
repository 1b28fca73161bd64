#!/usr/bin/python3
"""caption: a vision encoder over the last 3 frames' patch tokens (the video
encoder framegen pretrained, fine-tuned here) and a small GPT-style causal
decoder (textdecoder.py) with a KV cache; exported optimum-style as
models/caption: encoder_model.onnx, decoder_model.onnx,
decoder_with_past_model.onnx, tokenizer.json.

Captions follow the synthetic world's grammar: every object in view, in
class order, "a red circle moves left; a blue square is still". Besides the
caption loss, two per-patch heads (object class and motion under each
patch) ground the encoder, and their probabilities are added back into the
hidden states the decoder reads. The encoder and the class head start from
scene-vit's (framegen's pretrained encoder, fine-tuned on the patch
classes), so the model knows shapes and colours from the start and spends
its budget on motion and language.

With --scratch it trains the same network from scratch with the same budget
instead, for the model card.

    /usr/bin/python3 models/train/train_caption.py            fine-tune, export
    /usr/bin/python3 models/train/train_caption.py --scratch  the baseline
"""

import os
import re
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import textdecoder as TD  # noqa: E402
import tokenizer_words as TW  # noqa: E402
import world as W  # noqa: E402

OUT = os.path.join(W.ROOT, "models", "caption")
CACHE = W.CACHE
STEPS = int(os.environ.get("CAPTION_STEPS", "2500"))
BATCH = 32
LR = 1.5e-3
SEED = 3
K = W.NUM_FRAMES
MAX_LEN = 32  # tokens incl. BOS and EOS


MOTIONS = ["none", "left", "right", "up", "down", "still"]
AUX = 1.0  # weight of the per-patch losses
BACKGROUND_W = 0.1  # weight of background patches in them: the objects are what a caption names


class Captioner(nn.Module):
    """Encoder + decoder, with two per-patch heads: the class and the motion
    of the object under each patch of the newest frame. Trained with their
    own losses, they ground the encoder's tokens in what the caption has to
    say (a decoder learning from captions alone takes far longer to find
    it); their probabilities, projected back and added to the hidden states,
    hand the decoder that answer directly."""

    def __init__(self, enc):
        super().__init__()
        self.enc = enc
        self.dec = TD.TextDecoder(TW.VOCAB_SIZE, hidden_size=96, num_layers=2, num_heads=4,
                                  enc_dim=enc.dim, max_positions=MAX_LEN + 8)
        self.patch_head = nn.Linear(enc.dim, 13)
        self.motion_head = nn.Linear(enc.dim, len(MOTIONS))
        self.patch_back = nn.Linear(13, enc.dim)
        self.motion_back = nn.Linear(len(MOTIONS), enc.dim)

    def encode(self, tokens):
        """tokens [B, K, N, DTOK] → (encoder_hidden_states, class logits, motion logits)."""
        h = self.enc(tokens)
        pc, pm = self.patch_head(h), self.motion_head(h)
        return h + self.patch_back(pc.softmax(-1)) + self.motion_back(pm.softmax(-1)), pc, pm


class EncoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, patch_tokens):
        return self.model.encode(patch_tokens)[0]


def patch_loss(logits, target):
    """Cross-entropy over patches, background patches weighted BACKGROUND_W."""
    target = target.reshape(-1)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target, reduction="none")
    w = torch.where(target > 0, 1.0, BACKGROUND_W)
    return (loss * w).sum() / w.sum()


def token_rows(texts):
    rows = np.zeros((len(texts), MAX_LEN), dtype=np.int64)
    for r, text in enumerate(texts):
        ids = [TW.BOS_ID] + TW.encode(text) + [TW.EOS_ID]
        if len(ids) > MAX_LEN:
            raise ValueError(f"caption too long ({len(ids)} tokens): {text!r}")
        rows[r, :len(ids)] = ids
    return rows


def windows(nseq, nframes):
    return [(s, i) for s in range(nseq) for i in range(K - 1, nframes)]


def motion_maps(cls, truth):
    """[S, F, G, G] class maps + truth → [S, F, N] motion index of the object under each patch."""
    s_, f_ = cls.shape[:2]
    out = np.zeros((s_, f_, W.N), dtype=np.int64)
    for s in range(s_):
        for i in range(f_):
            by_class = {o["class"]: MOTIONS.index(o["motion"]) for o in truth[s * f_ + i]["objects"]}
            flat = cls[s, i].reshape(-1)
            out[s, i] = [by_class.get(int(c), 0) for c in flat]
    return out


def train(model, tok, captions, cls, motion, tag, val=None):
    """Train for STEPS; with CAPTION_EVAL_EVERY=n, log the validation figures
    every n steps (time not counted). Returns the training seconds."""
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    idx = windows(tok.shape[0], tok.shape[1])
    rng = np.random.default_rng(SEED)
    every = int(os.environ.get("CAPTION_EVAL_EVERY", "0"))
    t = time.time()
    for step in range(STEPS):
        W.cosine_lr(opt, step, STEPS, LR)
        b = [idx[j] for j in rng.integers(0, len(idx), BATCH)]
        x = W.normalise(np.stack([tok[s, i - K + 1:i + 1] for s, i in b]))
        ids = torch.from_numpy(np.stack([captions[s][i] for s, i in b]))
        h, lc, lm = model.encode(x)
        pc = torch.from_numpy(np.stack([cls[s, i].reshape(-1) for s, i in b]).astype(np.int64))
        pm = torch.from_numpy(np.stack([motion[s, i] for s, i in b]))
        loss = model.dec.loss(ids, h, pad_id=TW.PAD_ID) + AUX * (patch_loss(lc, pc) + patch_loss(lm, pm))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == STEPS - 1:
            W.log(f"{tag} step {step} loss {loss.item():.4f} ({time.time() - t:.0f}s)")
        if val is not None and every and (step + 1) % every == 0 and step + 1 < STEPS:
            t0 = time.time()
            model.eval()
            W.log(f"{tag} step {step + 1} validation {evaluate(model, *val)}")
            model.train()
            t += time.time() - t0
    model.eval()
    return time.time() - t


CLAUSE = re.compile(r"a (\w+) (\w+) (?:moves (\w+)|is (still))")


def clauses(text):
    return {(c, s): (m or st) for c, s, m, st in CLAUSE.findall(text)}


def evaluate(model, tok, truth, nframes, limit=600):
    """Fraction of ground-truth objects in view named with the right colour, shape and motion."""
    idx = windows(tok.shape[0], tok.shape[1])[:limit]
    right = total = exact = 0
    with torch.no_grad():
        for j in range(0, len(idx), 64):
            b = idx[j:j + 64]
            x = W.normalise(np.stack([tok[s, i - K + 1:i + 1] for s, i in b]))
            out = model.dec.greedy(model.encode(x)[0], TW.BOS_ID, TW.EOS_ID, MAX_LEN - 1)
            for (s, i), ids in zip(b, out.tolist()):
                rec = truth[s * nframes + i]
                got = clauses(TW.decode(ids))
                want = clauses(rec["caption"])
                total += len(want)
                right += sum(1 for k, v in want.items() if got.get(k) == v)
                exact += TW.decode(ids) == rec["caption"]
    return {"objects_right": right / max(total, 1), "exact_captions": exact / len(idx)}


def main():
    W.setup(SEED)
    # More, shorter sequences than scene-vit's 240×64: captions overfit the
    # scenes (one set of objects per sequence) long before the frames.
    _, fr, cl, truth = W.dataset("caption-train", W.TRAIN_SEED, 960, 32)
    _, vfr, _, vtruth = W.dataset("val", W.VAL_SEED, 16, 64)
    tok, vtok = W.tokenize(fr), W.tokenize(vfr)
    nseq, nfr = tok.shape[:2]
    captions = token_rows([r["caption"] for r in truth]).reshape(nseq, nfr, MAX_LEN)
    motion = motion_maps(cl, truth)
    val = (vtok, vtruth, vtok.shape[1])

    if "--scratch" in sys.argv:
        # The baseline: the same network from random init, same budget.
        torch.manual_seed(SEED)
        scratch = Captioner(W.VideoEncoder())
        t_sc = train(scratch, tok, captions, cl, motion, "scratch", val)
        m_sc = evaluate(scratch, *val)
        W.log(f"from scratch: {m_sc}")
        W.update_metrics(OUT, {"from_scratch": m_sc, "train_seconds_scratch": round(t_sc)})
        return
    start = os.path.join(CACHE, "scene_vit.pt")
    if not os.path.exists(start):
        sys.exit(f"{start} is missing: run train_scene_vit.py first (make models does)")
    sv = torch.load(start)
    model = Captioner(W.VideoEncoder())
    model.enc.load_state_dict({k[4:]: v for k, v in sv.items() if k.startswith("enc.")})
    model.patch_head.load_state_dict({"weight": sv["patch_head.weight"], "bias": sv["patch_head.bias"]})
    enc = model.enc
    W.log(f"caption: {W.params(model)} parameters, {STEPS} steps of {BATCH}")
    t_ft = train(model, tok, captions, cl, motion, "fine-tune", val)
    m_ft = evaluate(model, *val)
    W.log(f"fine-tuned: {m_ft}")
    torch.save(model.state_dict(), os.path.join(CACHE, "caption.pt"))

    os.makedirs(os.path.join(OUT, "testdata"), exist_ok=True)
    W.export(EncoderGraph(model), (torch.zeros(1, K, W.N, W.DTOK),), os.path.join(OUT, "encoder_model.onnx"),
             ["patch_tokens"], ["encoder_hidden_states"],
             {"patch_tokens": {0: "batch"}, "encoder_hidden_states": {0: "batch"}})
    TD.export_onnx(model.dec, OUT, W.N, enc.dim, opset=14)
    TW.write_tokenizer_json(os.path.join(OUT, "tokenizer.json"))
    # Reference data for the Go checks: two windows, their encoder output
    # and the greedy tokens torch decodes.
    ref = [(0, 10), (5, 40)]
    xr = np.stack([vtok[s, i - K + 1:i + 1] for s, i in ref])
    xr.astype(np.uint8).tofile(os.path.join(OUT, "testdata", "tokens_u8.bin"))
    with torch.no_grad():
        h = model.encode(W.normalise(xr))[0]
        W.save_f32(os.path.join(OUT, "testdata", "encoder_hidden_states_f32.bin"), h)
        logits, _ = model.dec(torch.tensor([[TW.BOS_ID]] * 2), h)
        W.save_f32(os.path.join(OUT, "testdata", "first_logits_f32.bin"), logits)
        greedy = model.dec.greedy(h, TW.BOS_ID, TW.EOS_ID, MAX_LEN - 1)
    W.write_json(os.path.join(OUT, "testdata", "greedy.json"),
                 {"tokens": greedy.tolist(), "text": [TW.decode(r) for r in greedy.tolist()]})
    W.write_json(os.path.join(OUT, "config.json"), {
        "model_type": "patchline-caption",
        "architectures": ["PatchlineCaptioner"],
        "is_encoder_decoder": True,
        "vocab_size": TW.VOCAB_SIZE,
        "bos_token_id": TW.BOS_ID,
        "eos_token_id": TW.EOS_ID,
        "pad_token_id": TW.PAD_ID,
        "decoder_start_token_id": TW.BOS_ID,
        "max_length": MAX_LEN,
        "num_frames": K,
        "image_size": W.WIDTH,
        "patch_size": W.PATCH,
        "encoder": {"hidden_size": enc.dim, "num_layers": len(enc.blocks), "num_patches": W.N},
        "decoder": model.dec.config(),
        "patchline": {"task": "caption", "input": "patch_tokens", "resize": "stretch"},
    })
    W.write_json(os.path.join(OUT, "preprocessor_config.json"), W.preprocessor_config())

    W.update_metrics(OUT, {"fine_tuned": m_ft, "parameters": W.params(model), "steps": STEPS, "batch": BATCH,
                    "train_seconds_fine_tune": round(t_ft), **W.threads(),
                    "train_frames": int(nseq * nfr), "train_sequences": int(nseq), "train_seq_frames": int(nfr)})



if __name__ == "__main__":
    main()
