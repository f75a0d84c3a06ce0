#!/usr/bin/env python3
"""Make the qwen3, phi3 and mistral3 fixtures: per architecture a small random-weight model written as GGUF with
gguf-py in the layout llama.cpp's converter writes (tensor names, shapes, metadata keys; q/k rows permuted for the
NORM-RoPE mistral3 as `LlamaModel.permute` does), its big matrices quantized (Q4_0, Q8_0) or F16, and the logits
Hugging Face `transformers` computes in float64 for the same (dequantized) weights over 32 positions.

    pip install torch transformers gguf numpy
    python3 scripts/arch_fixtures.py            # writes tests/fixtures/{qwen3,phi3,mistral3}/{model.gguf,hf_logits.f32,hf.json}

The transformers classes: Qwen3ForCausalLM, Phi3ForCausalLM (LongRoPE with partial rotary, as Phi-4-mini), and
MistralForCausalLM for mistral3 (the text stack of Mistral3ForConditionalGeneration is a MistralModel; llama.cpp's
converter writes it through LlamaModel as arch `mistral3`). llama.cpp's logits for the same files come from
scripts/llama-cpp-greedy/arch_logits.cpp.
"""

import importlib.metadata
import json
import math
import pathlib

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q

from qwen2_reference import vocab  # the same minimal GPT-2-style vocabulary as the qwen2 fixture

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
N_POS = 32
SEED = 4321


def permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute on the rows of a q/k matrix (any trailing shape, quantized bytes too):
    HF's rotate-half pairing (i, i + d/2) -> ggml's NORM pairing (2i, 2i + 1)."""
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def store(w, name, hf_param, qtype, permute_heads=None):
    """Quantize `hf_param` (out, in) row by row to `qtype`, write it to the GGUF as `name` (rows permuted for
    NORM RoPE when `permute_heads`), and set the parameter to the dequantized values, so both sides see the same
    weights."""
    x = hf_param.detach().double().numpy().astype(np.float32)
    if qtype == Q.F32:
        data, deq = x, x
    elif qtype == Q.F16:
        data = x.astype(np.float16)
        deq = data.astype(np.float32)
    else:
        data = gguf.quants.quantize(x, qtype)  # (rows, row bytes): rows stay rows
        deq = gguf.quants.dequantize(data, qtype).reshape(x.shape)
    with torch.no_grad():
        hf_param.copy_(torch.from_numpy(deq.astype(np.float64)).reshape(hf_param.shape))
    if permute_heads is not None:
        data = permute(data, permute_heads)
    if qtype in (Q.F32, Q.F16):
        w.add_tensor(name, data)
    else:
        w.add_tensor(name, data, raw_dtype=qtype)


def randomize(model):
    """Weights large enough that attention is far from uniform and the logits spread out; norms around 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)


def common_header(w, cfg, tokens, token_types, merges, n_ctx):
    w.add_name("tiny-random")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(n_ctx)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)


def tokenizer(w, tokens, token_types, merges):
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 1)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_add_bos_token(False)


def qwen3(tokens):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=len(tokens), hidden_size=128, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-6,
        tie_word_embeddings=True, use_sliding_window=False, attention_bias=False,
    )
    model = Qwen3ForCausalLM(cfg).eval()
    randomize(model)

    def write(w):
        w.add_rope_freq_base(1000000.0)
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        m = model.model
        store(w, "token_embd.weight", m.embed_tokens.weight, Q.Q8_0)  # tied: also the output head
        store(w, "output_norm.weight", m.norm.weight, Q.F32)
        for i, L in enumerate(m.layers):
            a, f = L.self_attn, L.mlp
            store(w, f"blk.{i}.attn_norm.weight", L.input_layernorm.weight, Q.F32)
            store(w, f"blk.{i}.attn_q.weight", a.q_proj.weight, Q.Q4_0)
            store(w, f"blk.{i}.attn_k.weight", a.k_proj.weight, Q.Q8_0)
            store(w, f"blk.{i}.attn_v.weight", a.v_proj.weight, Q.F16)
            store(w, f"blk.{i}.attn_output.weight", a.o_proj.weight, Q.Q4_0)
            store(w, f"blk.{i}.attn_q_norm.weight", a.q_norm.weight, Q.F32)
            store(w, f"blk.{i}.attn_k_norm.weight", a.k_norm.weight, Q.F32)
            store(w, f"blk.{i}.ffn_norm.weight", L.post_attention_layernorm.weight, Q.F32)
            store(w, f"blk.{i}.ffn_gate.weight", f.gate_proj.weight, Q.Q4_0)
            store(w, f"blk.{i}.ffn_up.weight", f.up_proj.weight, Q.Q4_0)
            store(w, f"blk.{i}.ffn_down.weight", f.down_proj.weight, Q.Q8_0)

    return cfg, model, write, 4096


def phi3(tokens):
    from transformers import Phi3Config, Phi3ForCausalLM

    n_embd, n_head, rot_pct, orig, max_pos = 128, 4, 0.75, 512, 4096
    rope_dims = int(rot_pct * n_embd) // n_head  # the converter's formula: 24 of head_dim 32
    rng = np.random.default_rng(SEED + 1)
    long_f = (1.0 + 3.0 * rng.random(rope_dims // 2)).round(4).tolist()
    short_f = (1.0 + 0.5 * rng.random(rope_dims // 2)).round(4).tolist()
    cfg = Phi3Config(
        vocab_size=len(tokens), hidden_size=n_embd, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=n_head, num_key_value_heads=2, max_position_embeddings=max_pos,
        original_max_position_embeddings=orig,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": rot_pct,
                         "long_factor": long_f, "short_factor": short_f},
        rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None, pad_token_id=len(tokens) - 1,
        bos_token_id=len(tokens) - 1, eos_token_id=len(tokens) - 1,
    )
    model = Phi3ForCausalLM(cfg).eval()
    randomize(model)
    # the converter's LongRoPE attention factor
    attn_factor = math.sqrt(1 + math.log(max_pos / orig) / math.log(orig))

    def write(w):
        w.add_rope_scaling_orig_ctx_len(orig)
        w.add_rope_dimension_count(rope_dims)
        w.add_rope_freq_base(10000.0)
        w.add_sliding_window(0)
        w.add_rope_scaling_attn_factors(attn_factor)
        w.add_tensor("rope_factors_long.weight", np.array(long_f, dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.array(short_f, dtype=np.float32))
        m = model.model
        store(w, "token_embd.weight", m.embed_tokens.weight, Q.F16)
        store(w, "output_norm.weight", m.norm.weight, Q.F32)
        store(w, "output.weight", model.lm_head.weight, Q.Q8_0)
        for i, L in enumerate(m.layers):
            a, f = L.self_attn, L.mlp
            store(w, f"blk.{i}.attn_norm.weight", L.input_layernorm.weight, Q.F32)
            store(w, f"blk.{i}.attn_qkv.weight", a.qkv_proj.weight, Q.Q8_0)  # rows q, k, v
            store(w, f"blk.{i}.attn_output.weight", a.o_proj.weight, Q.Q4_0)
            store(w, f"blk.{i}.ffn_norm.weight", L.post_attention_layernorm.weight, Q.F32)
            store(w, f"blk.{i}.ffn_up.weight", f.gate_up_proj.weight, Q.Q4_0)  # rows gate, up
            store(w, f"blk.{i}.ffn_down.weight", f.down_proj.weight, Q.F16)

    return cfg, model, write, max_pos


def mistral3(tokens):
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        vocab_size=len(tokens), hidden_size=128, intermediate_size=320, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000000.0}, rms_norm_eps=1e-5,
        tie_word_embeddings=False, sliding_window=None,
    )
    model = MistralForCausalLM(cfg).eval()
    randomize(model)

    def write(w):
        w.add_rope_freq_base(1000000000.0)
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_vocab_size(len(tokens))
        w.add_rope_dimension_count(cfg.head_dim)
        m = model.model
        store(w, "token_embd.weight", m.embed_tokens.weight, Q.Q4_0)
        store(w, "output_norm.weight", m.norm.weight, Q.F32)
        store(w, "output.weight", model.lm_head.weight, Q.F16)
        nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
        for i, L in enumerate(m.layers):
            a, f = L.self_attn, L.mlp
            store(w, f"blk.{i}.attn_norm.weight", L.input_layernorm.weight, Q.F32)
            store(w, f"blk.{i}.attn_q.weight", a.q_proj.weight, Q.Q4_0, permute_heads=nh)
            store(w, f"blk.{i}.attn_k.weight", a.k_proj.weight, Q.Q8_0, permute_heads=nkv)
            store(w, f"blk.{i}.attn_v.weight", a.v_proj.weight, Q.F16)
            store(w, f"blk.{i}.attn_output.weight", a.o_proj.weight, Q.Q4_0)
            store(w, f"blk.{i}.ffn_norm.weight", L.post_attention_layernorm.weight, Q.F32)
            store(w, f"blk.{i}.ffn_gate.weight", f.gate_proj.weight, Q.Q8_0)
            store(w, f"blk.{i}.ffn_up.weight", f.up_proj.weight, Q.Q4_0)
            store(w, f"blk.{i}.ffn_down.weight", f.down_proj.weight, Q.Q4_0)

    return cfg, model, write, 4096


def main():
    tokens, token_types, merges = vocab()
    for i, (arch, build) in enumerate([("qwen3", qwen3), ("phi3", phi3), ("mistral3", mistral3)]):
        torch.manual_seed(SEED + i)
        cfg, model, write, n_ctx = build(tokens)
        out = ROOT / arch
        out.mkdir(parents=True, exist_ok=True)
        w = gguf.GGUFWriter(str(out / "model.gguf"), arch)
        common_header(w, cfg, tokens, token_types, merges, n_ctx)
        write(w)  # also sets the HF parameters to the stored (dequantized) values
        tokenizer(w, tokens, token_types, merges)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

        model = model.double()
        rng = np.random.default_rng(SEED + i)
        ids = rng.integers(0, len(tokens) - 1, size=N_POS).tolist()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].numpy()  # (N_POS, vocab), float64
        logits.astype("<f4").tofile(out / "hf_logits.f32")
        meta = {
            "tokens": ids,
            "vocab": len(tokens),
            "made_by": f"scripts/arch_fixtures.py: {type(model).__name__} in float64, transformers "
            f"{importlib.metadata.version('transformers')}, torch {torch.__version__}, "
            f"gguf-py {importlib.metadata.version('gguf')}",
        }
        (out / "hf.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{arch}: {(out / 'model.gguf').stat().st_size} bytes, logits {logits.shape}, "
              f"|logits| max {np.abs(logits).max():.3f}")


if __name__ == "__main__":
    main()
