//! splitmix64: the one small seeded generator of the writers of random models (`gguf::tiny`, `synth`) and of the
//! tests' mutations. Deterministic per seed; not for anything that needs good randomness (the sampler has its own).

/// splitmix64 state.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1) from the top 24 bits of one draw.
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` uniforms in [-1, 1).
    pub fn vec_f32(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }

    /// Two uniforms in [-1, 1) from one draw (its low 24 bits and bits 32..56).
    pub fn two_f32(&mut self) -> [f32; 2] {
        let r = self.next_u64();
        let u = |x: u64| (x & 0xFF_FFFF) as f32 / (1u32 << 23) as f32 - 1.0;
        [u(r), u(r >> 32)]
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}
