// teacher-forced logits dump: prompt batch, then completion tokens one at a time (like llama-simple)
#include "llama.h"
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <string>
#include <vector>
#include "ggml.h"
#include "ggml-backend.h"
// DUMP=prefix: every tensor whose name starts with it is appended (f32, last row) to dump_<name>.f32
static bool dump_cb(struct ggml_tensor * t, bool ask, void *) {
    const char * pre = getenv("DUMP");
    const char * nm = ggml_get_name(t); size_t ln = strlen(nm), lp = pre ? strlen(pre) : 0;
    bool hit = pre && (strncmp(nm, pre, lp) == 0 || (ln >= lp && strcmp(nm + ln - lp, pre) == 0));
    if (!hit || t->type != GGML_TYPE_F32) return ask ? false : true;
    if (ask) return true;
    std::vector<float> buf(ggml_nelements(t));
    ggml_backend_tensor_get(t, buf.data(), 0, ggml_nbytes(t));
    std::string fn = std::string("/tmp/dump_") + ggml_get_name(t) + ".f32";
    FILE * f = fopen(fn.c_str(), "ab");
    int32_t ne[4] = {(int32_t) t->ne[0], (int32_t) t->ne[1], (int32_t) t->ne[2], (int32_t) t->ne[3]};
    fwrite(ne, sizeof(int32_t), 4, f);  // record: ne[4], then every value
    fwrite(buf.data(), sizeof(float), buf.size(), f);
    fclose(f);
    return true;
}
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include <algorithm>
#include <cstdlib>
int main(int argc, char ** argv) {
    const char * model_path = argv[1];
    std::string prompt = argv[2], completion = argv[3];
    int fa = argc > 4 ? atoi(argv[4]) : -1;
    llama_backend_init();
    auto mp = llama_model_default_params();
    if (getenv("NOREPACK")) mp.use_extra_bufts = false;
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_model * model = llama_model_load_from_file(model_path, mp);
    const llama_vocab * vocab = llama_model_get_vocab(model);
    auto tok = [&](const std::string & s, bool add, bool sp) {
        int n = -llama_tokenize(vocab, s.c_str(), s.size(), NULL, 0, add, sp);
        std::vector<llama_token> t(n);
        llama_tokenize(vocab, s.c_str(), s.size(), t.data(), n, add, sp);
        return t;
    };
    auto p = tok(prompt, true, true);
    auto c = tok(completion, false, false);
    auto cp = llama_context_default_params();
    cp.n_ctx = p.size() + c.size() + 1;
    cp.n_batch = p.size();
    cp.n_threads = getenv("NT") ? atoi(getenv("NT")) : 4; // llama-simple runs with the default, GGML_DEFAULT_N_THREADS
    cp.n_threads_batch = cp.n_threads;
    if (fa == 0) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    if (fa == 1) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    if (getenv("DUMP")) { cp.cb_eval = dump_cb; cp.cb_eval_user_data = nullptr; }
    // KV=q8_0: llama.cpp's -ctk q8_0 -ctv q8_0 (needs flash attention, FA 1)
    if (getenv("KV") && strcmp(getenv("KV"), "q8_0") == 0) { cp.type_k = GGML_TYPE_Q8_0; cp.type_v = GGML_TYPE_Q8_0; }
    llama_context * ctx = llama_init_from_model(model, cp);
    int nv = llama_vocab_n_tokens(vocab);
    printf("prompt ids");
    for (auto t : p) printf(" %d", t);
    printf("\n");
    llama_batch b = llama_batch_get_one(p.data(), p.size());
    llama_decode(ctx, b);
    FILE * dump = fopen(argc > 5 ? argv[5] : "logits.f32", "wb");
    for (size_t i = 0; i < c.size(); i++) {
        float * lg = llama_get_logits_ith(ctx, -1);
        fwrite(lg, sizeof(float), nv, dump);
        std::vector<int> idx(nv);
        for (int j = 0; j < nv; j++) idx[j] = j;
        std::partial_sort(idx.begin(), idx.begin() + 2, idx.end(), [&](int a, int bb) { return lg[a] > lg[bb]; });
        printf("%2zu want %6d %8.3f | top %6d %8.3f, 2nd %6d %8.3f%s\n", i, c[i], lg[c[i]], idx[0], lg[idx[0]], idx[1], lg[idx[1]], idx[0] == c[i] ? "" : "  <-- MISMATCH");
        llama_token t = c[i];
        b = llama_batch_get_one(&t, 1);
        llama_decode(ctx, b);
    }
    return 0;
}
