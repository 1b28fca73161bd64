"""A small GPT-style causal Transformer decoder with an explicit KV cache.

TextDecoder is the caption model's language half: token + learned position
embeddings, pre-LN blocks (causal self-attention whose past keys/values are
explicit inputs and whose present keys/values are outputs, cross-attention to
the vision encoder's hidden states, MLP), a final LayerNorm and an LM head
(tied to the token embedding or not).

    logits, presents = decoder(input_ids, enc, past=None)
        input_ids  int64   [B, T]
        enc        float32 [B, S, D_enc]   (encoder_hidden_states)
        past       None or [(key, value)] * L, each [B, H, P, hd]
        logits     float32 [B, T, V]
        presents   [(key, value)] * L, each [B, H, P+T, hd]

Token t of input_ids sits at position P+t (P = past length), so feeding the
tokens one at a time with the presents fed back as past gives exactly the
logits of one call on the whole prefix.

export_onnx(decoder, out_dir, enc_len, enc_dim, opset) writes the two
optimum-style decoder graphs patchline's Go side (internal/textgen) runs:

    decoder_model.onnx            input_ids [B,T], encoder_hidden_states [B,S,D]
                                  -> logits [B,T,V], present.{l}.key/.value [B,H,T,hd]
    decoder_with_past_model.onnx  input_ids [B,1], encoder_hidden_states [B,S,D],
                                  past_key_values.{l}.key/.value [B,H,P,hd]
                                  -> logits [B,1,V], present.{l}.key/.value [B,H,P+1,hd]

Import from models/train with sys.path (the training script and
internal/textgen/testdata/make_tiny.py do).
"""

import os

import torch
from torch import nn
from torch.nn import functional as F


class _Heads(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not a multiple of {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5

    def split(self, x):
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)

    def merge(self, x):
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)


class CausalSelfAttention(_Heads):
    """Masked self-attention with explicit past keys/values."""

    def __init__(self, dim, heads):
        super().__init__(dim, heads)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, past=None):
        q = self.split(self.query(x))
        k = self.split(self.key(x))
        v = self.split(self.value(x))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        t, s = q.shape[2], k.shape[2]
        # Query i is at absolute position (s - t) + i and sees keys 0..that.
        qpos = torch.arange(t, device=x.device).unsqueeze(1) + (s - t)
        kpos = torch.arange(s, device=x.device).unsqueeze(0)
        att = (q @ k.transpose(-2, -1)) * self.scale
        att = att.masked_fill(kpos > qpos, float("-inf"))
        y = self.merge(att.softmax(dim=-1) @ v)
        return self.out(y), (k, v)


class CrossAttention(_Heads):
    """Attention from the text positions to the encoder's hidden states."""

    def __init__(self, dim, enc_dim, heads):
        super().__init__(dim, heads)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(enc_dim, dim)
        self.value = nn.Linear(enc_dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, enc):
        q = self.split(self.query(x))
        k = self.split(self.key(enc))
        v = self.split(self.value(enc))
        att = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.out(self.merge(att @ v))


class Block(nn.Module):
    def __init__(self, dim, enc_dim, heads, mlp_ratio=4, dropout=0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.self_attn = CausalSelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, enc_dim, heads)
        self.ln3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x, enc, past=None):
        a, present = self.self_attn(self.ln1(x), past)
        x = x + self.drop(a)
        x = x + self.drop(self.cross_attn(self.ln2(x), enc))
        x = x + self.drop(self.mlp(self.ln3(x)))
        return x, present


class TextDecoder(nn.Module):
    """GPT-style decoder: forward(input_ids, enc, past=None) -> (logits, presents)."""

    def __init__(self, vocab_size, hidden_size=128, num_layers=2, num_heads=4,
                 enc_dim=128, max_positions=64, tie_embeddings=True, dropout=0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.enc_dim = enc_dim
        self.max_positions = max_positions
        self.tok_emb = nn.Embedding(vocab_size, hidden_size)
        self.pos_emb = nn.Embedding(max_positions, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            [Block(hidden_size, enc_dim, num_heads, dropout=dropout) for _ in range(num_layers)]
        )
        self.ln_f = nn.LayerNorm(hidden_size)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def config(self):
        """The "decoder" object of the caption bundle's config.json."""
        return {
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "hidden_size": self.hidden_size,
            "max_positions": self.max_positions,
        }

    def forward(self, input_ids, enc, past=None):
        t = input_ids.shape[1]
        p = 0 if past is None else past[0][0].shape[2]
        pos = torch.arange(t, device=input_ids.device) + p
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos).unsqueeze(0))
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, enc, None if past is None else past[i])
            presents.append(present)
        return self.lm_head(self.ln_f(x)), presents

    def loss(self, input_ids, enc, pad_id=0):
        """Teacher-forced next-token cross-entropy; input_ids = [BOS] words [EOS] [PAD]..."""
        logits, _ = self(input_ids[:, :-1], enc)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), ignore_index=pad_id
        )

    @torch.no_grad()
    def greedy(self, enc, bos_id, eos_id, max_new_tokens, use_cache=True):
        """Greedy decoding (reference for the Go decoder): generated ids [B, <=max_new_tokens]."""
        b = enc.shape[0]
        ids = torch.full((b, 1), bos_id, dtype=torch.long, device=enc.device)
        done = torch.zeros(b, dtype=torch.bool, device=enc.device)
        past, out = None, []
        for _ in range(max_new_tokens):
            if use_cache:
                logits, past = self(ids[:, -1:], enc, past)
            else:
                logits, _ = self(ids, enc)
            nxt = logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            out.append(nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done = done | (nxt == eos_id)
            if bool(done.all()):
                break
        return torch.stack(out, dim=1) if out else ids[:, :0]


def past_names(num_layers):
    """Input names of the past keys/values, layer by layer (key then value)."""
    names = []
    for layer in range(num_layers):
        names += [f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"]
    return names


def present_names(num_layers):
    """Output names of the present keys/values, layer by layer (key then value)."""
    names = []
    for layer in range(num_layers):
        names += [f"present.{layer}.key", f"present.{layer}.value"]
    return names


class _NoPast(nn.Module):
    def __init__(self, dec):
        super().__init__()
        self.dec = dec

    def forward(self, input_ids, encoder_hidden_states):
        logits, presents = self.dec(input_ids, encoder_hidden_states)
        return (logits, *[t for kv in presents for t in kv])


class _WithPast(nn.Module):
    def __init__(self, dec):
        super().__init__()
        self.dec = dec

    def forward(self, input_ids, encoder_hidden_states, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(self.dec.num_layers)]
        logits, presents = self.dec(input_ids, encoder_hidden_states, past)
        return (logits, *[t for kv in presents for t in kv])


def export_onnx(decoder, out_dir, enc_len, enc_dim, opset=17):
    """Write decoder_model.onnx and decoder_with_past_model.onnx to out_dir.

    Batch (B), text length (T) and past length (P) are dynamic axes; the
    encoder length is enc_len and its width enc_dim. Returns the two paths.
    """
    decoder = decoder.eval()
    n = decoder.num_layers
    h, hd = decoder.num_heads, decoder.head_dim
    b, t, p = 2, 3, 4
    ids = torch.ones((b, t), dtype=torch.long)
    enc = torch.zeros((b, enc_len, enc_dim), dtype=torch.float32)
    enc_axes = {0: "batch"}
    kv_axes_present = {0: "batch", 2: "total_length"}

    no_past = os.path.join(out_dir, "decoder_model.onnx")
    axes = {"input_ids": {0: "batch", 1: "length"}, "encoder_hidden_states": enc_axes,
            "logits": {0: "batch", 1: "length"}}
    for name in present_names(n):
        axes[name] = {0: "batch", 2: "length"}
    with torch.no_grad():
        torch.onnx.export(
            _NoPast(decoder), (ids, enc), no_past,
            input_names=["input_ids", "encoder_hidden_states"],
            output_names=["logits"] + present_names(n),
            dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
        )

    with_past = os.path.join(out_dir, "decoder_with_past_model.onnx")
    past = [torch.zeros((b, h, p, hd)) for _ in range(2 * n)]
    axes = {"input_ids": {0: "batch"}, "encoder_hidden_states": enc_axes, "logits": {0: "batch"}}
    for name in past_names(n):
        axes[name] = {0: "batch", 2: "past_length"}
    for name in present_names(n):
        axes[name] = kv_axes_present
    with torch.no_grad():
        torch.onnx.export(
            _WithPast(decoder), (ids[:, :1], enc, *past), with_past,
            input_names=["input_ids", "encoder_hidden_states"] + past_names(n),
            output_names=["logits"] + present_names(n),
            dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
        )
    return no_past, with_past
