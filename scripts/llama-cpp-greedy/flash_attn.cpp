// Development aid (not used by tests): writes tests/fixtures/ggml_flash_attn/, the output of ggml-cpu's
// flash_attn_ext over an f16 cache, computed with 4 threads (llama-simple's default), for query batches that take
// each of its paths: one query (split-KV from 512 padded keys, else one chunk), a few queries, 64+ queries (tiled).
// Build: see build.sh; run with LD_LIBRARY_PATH pointing at the portable (AVX2) ggml-cpu build.
//   flash_attn OUT_DIR
// File OUT_DIR/<name>.bin, little-endian: u32 head_dim, n_heads, n_kv_heads, n_q, pos0, window (0: none), f32 scale;
// f32 q [n_q][n_heads][head_dim]; f16 k, v [pos0 + n_q][n_kv_heads][head_dim] (the engine's cache layout);
// f32 out [n_q][n_heads][head_dim].
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "fixture_util.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

static Uniform uniform{0x2545F4914F6CDD1Dull};

int main(int argc, char ** argv) {
    if (argc < 2) { fprintf(stderr, "usage: flash_attn OUT_DIR\n"); return 1; }
    const std::string dir = argv[1];
    struct Case { const char * name; int n_q, pos0, window; };
    const Case cases[] = {
        {"decode_200", 1, 200, 0},       // 256 padded keys: one chunk
        {"decode_300", 1, 300, 0},       // 512 padded keys: split into 4 chunks of 128
        {"decode_700", 1, 700, 0},       // 768: chunks of 192
        {"decode_700_swa", 1, 700, 512}, // sliding window: the first chunk fully masked
        {"batch5_300", 5, 300, 0},       // a few queries: one chunk each
        {"batch70_300", 70, 300, 0},     // 64+ queries: tiled
    };
    const int hd = 64, n_heads = 2, n_kv_heads = 1;  // grouped: two query heads per KV head
    const float scale = 0.125f;

    ggml_backend_t backend = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(backend, 4);
    for (const Case & c : cases) {
        const int n_kv = c.pos0 + c.n_q;                     // filled cache positions
        const int n_pad = (n_kv + 255) / 256 * 256;          // llama_kv_cache::get_n_kv
        std::vector<float> q((size_t) c.n_q * n_heads * hd);
        for (auto & x : q) x = uniform() * 2.0f;
        // cache in the engine's layout [pos][kv_head][d]; padded positions are garbage that the mask hides
        std::vector<ggml_fp16_t> k((size_t) n_pad * n_kv_heads * hd), v(k.size());
        for (size_t i = 0; i < k.size(); i++) {
            k[i] = ggml_fp32_to_fp16(uniform() * 1.5f);
            v[i] = ggml_fp32_to_fp16(uniform());
        }

        ggml_context * ctx = ggml_init({ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true});
        ggml_tensor * tq = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hd, c.n_q, n_heads);
        ggml_tensor * tk = ggml_new_tensor_3d(ctx, GGML_TYPE_F16, hd, n_pad, n_kv_heads);
        ggml_tensor * tv = ggml_new_tensor_3d(ctx, GGML_TYPE_F16, hd, n_pad, n_kv_heads);
        ggml_tensor * tm = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_pad, c.n_q);
        ggml_tensor * out = ggml_flash_attn_ext(ctx, tq, tk, tv, tm, scale, 0.0f, 0.0f);
        ggml_cgraph * gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, out);
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, backend);

        std::vector<float> qg(q.size());  // [head][t][d]
        for (int t = 0; t < c.n_q; t++)
            for (int h = 0; h < n_heads; h++)
                for (int d = 0; d < hd; d++) qg[((size_t) h * c.n_q + t) * hd + d] = q[((size_t) t * n_heads + h) * hd + d];
        std::vector<ggml_fp16_t> kg(k.size()), vg(v.size());  // [kv_head][pos][d]
        for (int j = 0; j < n_pad; j++)
            for (int h = 0; h < n_kv_heads; h++)
                for (int d = 0; d < hd; d++) {
                    kg[((size_t) h * n_pad + j) * hd + d] = k[((size_t) j * n_kv_heads + h) * hd + d];
                    vg[((size_t) h * n_pad + j) * hd + d] = v[((size_t) j * n_kv_heads + h) * hd + d];
                }
        std::vector<ggml_fp16_t> mask((size_t) c.n_q * n_pad);
        for (int t = 0; t < c.n_q; t++) {
            const int pos = c.pos0 + t;
            for (int j = 0; j < n_pad; j++) {
                const bool seen = j <= pos && (c.window == 0 || pos - j < c.window);
                mask[(size_t) t * n_pad + j] = ggml_fp32_to_fp16(seen ? 0.0f : -INFINITY);
            }
        }
        ggml_backend_tensor_set(tq, qg.data(), 0, qg.size() * 4);
        ggml_backend_tensor_set(tk, kg.data(), 0, kg.size() * 2);
        ggml_backend_tensor_set(tv, vg.data(), 0, vg.size() * 2);
        ggml_backend_tensor_set(tm, mask.data(), 0, mask.size() * 2);
        ggml_backend_graph_compute(backend, gf);
        std::vector<float> o((size_t) c.n_q * n_heads * hd);  // [t][head][d]
        ggml_backend_tensor_get(out, o.data(), 0, o.size() * 4);

        FILE * f = fopen((dir + "/" + c.name + ".bin").c_str(), "wb");
        for (int x : {hd, n_heads, n_kv_heads, c.n_q, c.pos0, c.window}) put_u32(f, (uint32_t) x);
        fwrite(&scale, 4, 1, f);
        fwrite(q.data(), 4, q.size(), f);
        fwrite(k.data(), 2, (size_t) n_kv * n_kv_heads * hd, f);
        fwrite(v.data(), 2, (size_t) n_kv * n_kv_heads * hd, f);
        fwrite(o.data(), 4, o.size(), f);
        fclose(f);
        fprintf(stderr, "%s: n_pad %d out[0] %g\n", c.name, n_pad, o[0]);
        ggml_backend_buffer_free(buf);
        ggml_free(ctx);
    }
    ggml_backend_free(backend);
    return 0;
}
