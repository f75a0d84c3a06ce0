#!/usr/bin/env python3
"""Make the Qwen2 fixture: a small random-weight Qwen2 model, written as GGUF (F32 weights) with gguf-py, and the
logits Hugging Face `transformers` computes for it, so that `tests/generate_qwen2.rs` checks our forward against an
independent implementation.

    pip install torch transformers gguf numpy
    python3 scripts/qwen2_reference.py        # writes tests/fixtures/qwen2/{qwen2-tiny.gguf,reference.json,logits.f32}

The reference forward runs in float64, so the comparison measures our f32 error only.
"""

import json
import pathlib

import gguf
import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "qwen2"
N_POS = 32
ROPE_THETA = 10000.0
SEED = 1234


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def vocab():
    """256 byte tokens, three merges, one control token: a minimal but valid GPT-2-style vocabulary."""
    byte_tokens = [bytes_to_unicode()[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt he"]
    tokens = byte_tokens + ["Ġt", "he", "Ġthe", "<|endoftext|>"]
    types = [gguf.TokenType.NORMAL] * (len(tokens) - 1) + [gguf.TokenType.CONTROL]
    return tokens, types, merges


def main():
    tokens, token_types, merges = vocab()
    cfg = Qwen2Config(
        vocab_size=len(tokens),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
    )
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(cfg).eval()
    # Weights large enough that attention is far from uniform and the logits spread out; norms around 1.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.5 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
    model = model.double()

    rng = np.random.default_rng(SEED)
    ids = rng.integers(0, len(tokens) - 1, size=N_POS).tolist()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy()  # (N_POS, vocab), float64

    OUT.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(OUT / "qwen2-tiny.gguf"), "qwen2")
    w.add_name("qwen2-tiny-random")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 1)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_add_bos_token(False)

    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
    names = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    # gguf-py reverses numpy's shape: a (out, in) matrix becomes dims [in, out], rows of length `in`.
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            w.add_tensor(f"blk.{i}.{gg}", sd[f"model.layers.{i}.{hf}"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    logits.astype("<f4").tofile(OUT / "logits.f32")
    meta = {
        "tokens": ids,
        "n_pos": N_POS,
        "vocab": len(tokens),
        "made_by": "scripts/qwen2_reference.py: transformers Qwen2ForCausalLM in float64, "
        f"torch {torch.__version__}",
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {OUT}: logits {logits.shape}, |logits| max {np.abs(logits).max():.3f}")


if __name__ == "__main__":
    main()
