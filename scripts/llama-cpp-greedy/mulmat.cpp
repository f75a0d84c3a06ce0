// Development aid (not used by tests): writes tests/fixtures/ggml_mulmat/, the mat-mul outputs of llama.cpp's CPU
// backend for random weights of every quantized type and batches of 1..9 tokens. Weights go into the CPU backend's
// extra (repack) buffer where ggml would put them when a model is loaded, so Q4_0 / Q4_K of a multiple of 8 rows take
// the repacked gemv/gemm, and K-quants in batches of 8+ tokens the tiled kernels, as in llama.cpp.
// Build: see build.sh; run with LD_LIBRARY_PATH pointing at the portable (AVX2) ggml-cpu build.
//   mulmat OUT_DIR
// File OUT_DIR/<TYPE>_<ROWS>.bin, little-endian: u32 type, rows, cols, n_batches, weight_bytes; the weight bytes;
// f32 activations [max_batch][cols]; then per batch: u32 n_tok, f32 outputs [n_tok][rows].
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "fixture_util.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

static Uniform uniform{0x9E3779B97F4A7C15ull};

int main(int argc, char ** argv) {
    if (argc < 2) { fprintf(stderr, "usage: mulmat OUT_DIR\n"); return 1; }
    const std::string dir = argv[1];
    const int cols = 512;
    const int batches[] = {1, 4, 5, 8, 9};
    const int max_batch = 9;

    ggml_backend_t backend = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(backend, 2);
    ggml_backend_dev_t dev = ggml_backend_get_device(backend);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    auto get_extra = (ggml_backend_buffer_type_t * (*)(ggml_backend_dev_t))
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
    ggml_backend_buffer_type_t extra = get_extra ? get_extra(dev)[0] : nullptr;
    if (!extra) { fprintf(stderr, "no extra buffer type\n"); return 1; }

    struct Case { ggml_type ty; int rows; };
    const Case cases[] = {
        {GGML_TYPE_F16, 32},  {GGML_TYPE_Q4_0, 32}, {GGML_TYPE_Q4_0, 20}, {GGML_TYPE_Q4_1, 32},
        {GGML_TYPE_Q5_0, 32}, {GGML_TYPE_Q5_1, 32}, {GGML_TYPE_Q8_0, 32}, {GGML_TYPE_Q2_K, 32},
        {GGML_TYPE_Q3_K, 32}, {GGML_TYPE_Q4_K, 32}, {GGML_TYPE_Q4_K, 20}, {GGML_TYPE_Q5_K, 32},
        {GGML_TYPE_Q6_K, 32},
    };
    for (const Case & c : cases) {
        std::vector<float> wf((size_t) c.rows * cols), x((size_t) max_batch * cols);
        for (auto & v : wf) v = uniform() * 0.5f;
        for (size_t i = 0; i < x.size(); i++) x[i] = uniform() * (1.0f + 3.0f * ((i / 37) % 3));
        const size_t wbytes = ggml_row_size(c.ty, cols) * c.rows;
        std::vector<uint8_t> wq(wbytes);
        ggml_quantize_chunk(c.ty, wf.data(), wq.data(), 0, c.rows, cols, nullptr);

        const std::string path = dir + "/" + ggml_type_name(c.ty) + "_" + std::to_string(c.rows) + ".bin";
        FILE * f = fopen(path.c_str(), "wb");
        put_u32(f, c.ty); put_u32(f, c.rows); put_u32(f, cols); put_u32(f, sizeof(batches) / sizeof(int));
        put_u32(f, wbytes);
        fwrite(wq.data(), 1, wbytes, f);
        fwrite(x.data(), 4, x.size(), f);

        for (int n_tok : batches) {
            ggml_init_params wp = {ggml_tensor_overhead() * 4, nullptr, true};
            ggml_context * cw = ggml_init(wp);
            ggml_tensor * w = ggml_new_tensor_2d(cw, c.ty, cols, c.rows);
            // ggml-cpu's x86 repack takes Q4_0 and Q4_K of a multiple of 8 rows (ggml_repack_get_optimal_repack_type)
            const bool repack = (c.ty == GGML_TYPE_Q4_0 || c.ty == GGML_TYPE_Q4_K) && c.rows % 8 == 0;
            ggml_backend_buffer_t bw =
                ggml_backend_alloc_ctx_tensors_from_buft(cw, repack ? extra : ggml_backend_cpu_buffer_type());
            if (repack != (w->extra != nullptr)) { fprintf(stderr, "unexpected repack state\n"); return 1; }
            ggml_backend_tensor_set(w, wq.data(), 0, wbytes);

            ggml_context * ca = ggml_init({ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true});
            ggml_tensor * a = ggml_new_tensor_2d(ca, GGML_TYPE_F32, cols, n_tok);
            ggml_tensor * y = ggml_mul_mat(ca, w, a);
            ggml_cgraph * gf = ggml_new_graph(ca);
            ggml_build_forward_expand(gf, y);
            ggml_backend_buffer_t ba = ggml_backend_alloc_ctx_tensors(ca, backend);
            ggml_backend_tensor_set(a, x.data(), 0, (size_t) n_tok * cols * 4);
            ggml_backend_graph_compute(backend, gf);
            std::vector<float> out((size_t) n_tok * c.rows);
            ggml_backend_tensor_get(y, out.data(), 0, out.size() * 4);
            put_u32(f, n_tok);
            fwrite(out.data(), 4, out.size(), f);
            fprintf(stderr, "%s rows %d n_tok %d repacked %d y[0] %g\n", ggml_type_name(c.ty), c.rows, n_tok,
                    w->extra != nullptr, out[0]);
            ggml_backend_buffer_free(ba);
            ggml_backend_buffer_free(bw);
            ggml_free(ca);
            ggml_free(cw);
        }
        fclose(f);
    }
    ggml_backend_free(backend);
    return 0;
}
