// llama-simple's greedy loop with one thread; prints only the completion (no trailing newline)
#include "llama.h"
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
int main(int argc, char ** argv) {
    const char * model_path = argv[1];
    int n_predict = atoi(argv[2]);
    std::string prompt = argv[3];
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    auto mp = llama_model_default_params();
    if (getenv("NOREPACK")) mp.use_extra_bufts = false;
    llama_model * model = llama_model_load_from_file(model_path, mp);
    const llama_vocab * vocab = llama_model_get_vocab(model);
    int n_prompt = -llama_tokenize(vocab, prompt.c_str(), prompt.size(), NULL, 0, true, true);
    std::vector<llama_token> p(n_prompt);
    llama_tokenize(vocab, prompt.c_str(), prompt.size(), p.data(), n_prompt, true, true);
    auto cp = llama_context_default_params();
    cp.n_ctx = n_prompt + n_predict - 1;
    cp.n_batch = n_prompt;
    cp.n_threads = getenv("NT") ? atoi(getenv("NT")) : 4; // llama-simple runs with the default, GGML_DEFAULT_N_THREADS
    cp.n_threads_batch = cp.n_threads;
    if (getenv("FA")) cp.flash_attn_type = atoi(getenv("FA")) ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    llama_context * ctx = llama_init_from_model(model, cp);
    auto sp = llama_sampler_chain_default_params();
    llama_sampler * smpl = llama_sampler_chain_init(sp);
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());
    llama_batch batch = llama_batch_get_one(p.data(), n_prompt);
    llama_token tok;
    for (int n_pos = 0; n_pos + batch.n_tokens < n_prompt + n_predict;) {
        if (llama_decode(ctx, batch)) return 1;
        n_pos += batch.n_tokens;
        tok = llama_sampler_sample(smpl, ctx, -1);
        if (llama_vocab_is_eog(vocab, tok)) break;
        char buf[256];
        int n = llama_token_to_piece(vocab, tok, buf, sizeof(buf), 0, true);
        fwrite(buf, 1, n, stdout);
        batch = llama_batch_get_one(&tok, 1);
    }
    return 0;
}
