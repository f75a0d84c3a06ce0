// Teacher-forced logits of llama.cpp for tests/archs.rs (dev aid, not run by tests):
//   arch_logits MODEL OUT.bin
// For each case (prompt of P random ids, then D more ids one at a time) in a fresh context of P + D positions:
// one llama_decode of the prompt with logits for every position (llama.cpp splits it into 512-token ubatches),
// then D single-token decodes. Run as llama-simple runs: 4 threads, flash attention on, weights repacked as
// the CPU backend does by default, f16 KV cache.
// OUT.bin, little-endian: "ALG1", u32 n_vocab, u32 n_cases; per case: u32 P, u32 D, u32 n_ctx, u32 ids[P + D],
// u64 hash[P + D] (FNV-1a 64 of each position's f32 logits), u32 n_rows, then n_rows x (u32 position,
// f32 logits[n_vocab]).
#include "llama.h"
#include "fixture_util.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

static uint64_t fnv1a64(const float * x, int n) {
    const unsigned char * b = (const unsigned char *) x;
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < (size_t) n * 4; i++) h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

int main(int argc, char ** argv) {
    if (argc < 3) { fprintf(stderr, "usage: arch_logits MODEL OUT.bin\n"); return 2; }
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    const int cases[][2] = {{5, 4}, {70, 4}, {600, 8}};
    const int n_cases = sizeof(cases) / sizeof(cases[0]);
    FILE * out = fopen(argv[2], "wb");
    fwrite("ALG1", 1, 4, out);
    put_u32(out, nv);
    put_u32(out, n_cases);
    Uniform u{0x5EED0000ull + (uint64_t) nv};
    for (int c = 0; c < n_cases; c++) {
        const int P = cases[c][0], D = cases[c][1], n = P + D;
        std::vector<llama_token> ids(n);
        for (auto & t : ids) t = (llama_token) ((u() * 0.5f + 0.5f) * (nv - 1));  // [0, nv - 1): no control token
        auto cp = llama_context_default_params();
        cp.n_ctx = n;
        cp.n_batch = P;
        cp.n_ubatch = 512;
        cp.n_threads = 4;
        cp.n_threads_batch = 4;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
        llama_context * ctx = llama_init_from_model(model, cp);
        std::vector<float> logits((size_t) n * nv);
        llama_batch b = llama_batch_init(P, 0, 1);
        for (int i = 0; i < P; i++) {
            b.token[i] = ids[i];
            b.pos[i] = i;
            b.n_seq_id[i] = 1;
            b.seq_id[i][0] = 0;
            b.logits[i] = 1;
        }
        b.n_tokens = P;
        if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 1; }
        for (int i = 0; i < P; i++) memcpy(&logits[(size_t) i * nv], llama_get_logits_ith(ctx, i), nv * 4);
        llama_batch_free(b);
        for (int i = P; i < n; i++) {
            llama_token t = ids[i];
            if (llama_decode(ctx, llama_batch_get_one(&t, 1))) { fprintf(stderr, "decode failed\n"); return 1; }
            memcpy(&logits[(size_t) i * nv], llama_get_logits_ith(ctx, -1), nv * 4);
        }
        llama_free(ctx);
        put_u32(out, P);
        put_u32(out, D);
        put_u32(out, n);
        for (auto t : ids) put_u32(out, t);
        for (int i = 0; i < n; i++) {
            uint64_t h = fnv1a64(&logits[(size_t) i * nv], nv);
            fwrite(&h, 8, 1, out);
        }
        // full rows: every 64th position, the last two of the prompt and the decode steps' first and last
        std::vector<int> rows;
        for (int i = 0; i < n; i++) {
            if (i % 64 == 0 || i == 1 || i == P - 1 || i == P || i == n - 1) rows.push_back(i);
        }
        put_u32(out, rows.size());
        for (int r : rows) {
            put_u32(out, r);
            fwrite(&logits[(size_t) r * nv], 4, nv, out);
        }
        fprintf(stderr, "case P=%d D=%d: %zu full rows\n", P, D, rows.size());
    }
    fclose(out);
    llama_model_free(model);
    return 0;
}
