// Shared by the fixture writers (mulmat.cpp, flash_attn.cpp): a seeded uniform source and little-endian output.
#pragma once
#include <cstdint>
#include <cstdio>

// splitmix64 -> uniform float in [-1, 1)
struct Uniform {
    uint64_t state;
    float operator()() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        return (float) ((z >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    }
};

static inline void put_u32(FILE * f, uint32_t v) { fwrite(&v, 4, 1, f); }
