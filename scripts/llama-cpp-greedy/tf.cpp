// teacher-forced logits dump: prompt batch, then completion tokens one at a time (like llama-simple)
#include "llama.h"
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include <algorithm>
int main(int argc, char ** argv) {
    const char * model_path = argv[1];
    std::string prompt = argv[2], completion = argv[3];
    int fa = argc > 4 ? atoi(argv[4]) : -1;
    llama_backend_init();
    auto mp = llama_model_default_params();
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
    if (fa == 0) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    if (fa == 1) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
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
