// Dumps llama.cpp's tokenization of texts separated by \x1e: per text "S ids" (special tokens parsed), "P ids"
// (plain), both with BOS/EOS as the model asks (like llama-tokenize), then "D hex" = llama_detokenize of the plain
// ids and "T hex" = their token_to_piece(special) pieces; last line "EOG ids". Same format as the Rust side.
#include "llama.h"
#include <cstdio>
#include <string>
#include <vector>
#include <fstream>
#include <sstream>
static std::vector<llama_token> tok(const llama_vocab * v, const std::string & s, bool add, bool parse) {
    std::vector<llama_token> out(s.size() + 16);
    int n = llama_tokenize(v, s.data(), s.size(), out.data(), out.size(), add, parse);
    if (n < 0) { out.resize(-n); n = llama_tokenize(v, s.data(), s.size(), out.data(), out.size(), add, parse); }
    out.resize(n); return out;
}
static std::string hex(const std::string & s) { std::string h; char b[3]; for (unsigned char c : s) { snprintf(b, 3, "%02x", c); h += b; } return h; }
int main(int argc, char ** argv) {
    llama_backend_init();
    auto mp = llama_model_default_params(); mp.vocab_only = true;
    llama_model * m = llama_model_load_from_file(argv[1], mp);
    const llama_vocab * v = llama_model_get_vocab(m);
    std::ifstream f(argv[2], std::ios::binary); std::stringstream ss; ss << f.rdbuf(); std::string all = ss.str();
    bool add = llama_vocab_get_add_bos(v);
    size_t pos = 0;
    while (pos <= all.size()) {
        size_t e = all.find('\x1e', pos); if (e == std::string::npos) e = all.size();
        std::string t = all.substr(pos, e - pos);
        for (int mode = 0; mode < 2; mode++) {
            auto ids = tok(v, t, add, mode == 0);
            printf("%c", mode == 0 ? 'S' : 'P'); for (auto id : ids) printf(" %d", id); printf("\n");
        }
        auto ids = tok(v, t, false, false);
        std::string buf(t.size() * 4 + 64, '\0');
        int n = llama_detokenize(v, ids.data(), ids.size(), buf.data(), buf.size(), false, false);
        buf.resize(n < 0 ? 0 : n);
        printf("D %s\n", hex(buf).c_str());
        std::string pieces; char pb[512];
        for (auto id : ids) { int k = llama_token_to_piece(v, id, pb, sizeof pb, 0, true); if (k > 0) pieces.append(pb, k); }
        printf("T %s\n", hex(pieces).c_str());
        pos = e + 1;
    }
    printf("EOG");
    for (int i = 0; i < llama_vocab_n_tokens(v); i++) if (llama_vocab_is_eog(v, i)) printf(" %d", i);
    printf("\n");
    return 0;
}
