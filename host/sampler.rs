//! Sampling: logits (vocab_size,) -> one token id.
//!
//! Follows llama.cpp's common sampler chain with its default order and defaults:
//!
//! ```text
//! logit bias -> penalties -> top_k -> typical_p -> top_p -> min_p -> temperature -> dist (seeded draw)
//! ```
//!
//! Each step works on a shrinking candidate list of (id, logit). Steps that need probabilities (typical_p,
//! top_p) take the softmax of the candidates that are still in the list, so they see the distribution that
//! the earlier truncations left. Temperature comes last: it changes the final draw, not which tokens survive.
//! `temperature <= 0` replaces the draw by the argmax of the survivors (ties go to the lowest id).
//!
//! The random draw uses xoshiro256** seeded through splitmix64: the same seed gives the same tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use crate::{Error, Result};

// ----------------------------------------------------------------------------
// Parameters: defaults as llama.cpp's `common_params_sampling`
// ----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Default 0.8. <= 0 = greedy argmax; 1.0 = the model's distribution
    pub temperature: f32,
    /// Default 40: keep the k highest logits; 0 (or >= vocab) = off
    pub top_k: usize,
    /// Default 0.95. Nucleus: smallest set with cumulative probability >= p; 1.0 = off
    pub top_p: f32,
    /// Default 0.05: keep tokens with p >= min_p * p_max; 0.0 = off
    pub min_p: f32,
    /// Default 1.0 = off. Locally typical sampling (Meister et al. 2022)
    pub typical_p: f32,
    /// Default 1.0 = off. logit > 0 ? logit / r : logit * r for recent tokens
    pub repeat_penalty: f32,
    /// Default 64: how many accepted tokens the penalties look back over; 0 = off
    pub repeat_last_n: usize,
    /// Default 0.0 = off. logit -= count * f
    pub frequency_penalty: f32,
    /// Default 0.0 = off. logit -= (count > 0) * p
    pub presence_penalty: f32,
    /// Default empty. (token id, bias added to its logit); -inf bans the token
    pub logit_bias: Vec<(u32, f32)>,
    /// Fixed seed => identical output; `Default` picks a random one
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: random_seed(), // llama.cpp: LLAMA_DEFAULT_SEED = "pick one at random"
        }
    }
}

impl SamplingParams {
    /// Every step of the chain off, temperature 1: the plain softmax draw with `seed` (the baseline that tests
    /// turn one step on against).
    pub fn plain(seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed,
        }
    }

    /// Checks the ranges a user can get wrong on the command line. `Sampler` never panics on bad values
    /// (NaN turns a step off, or makes the choice greedy), but the CLI should reject them.
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        let bad = |name: &str, v: f32, range: &str| {
            Error::Usage(format!("{name} {v} is out of range, expected {range}"))
        };
        if !self.temperature.is_finite() {
            return Err(bad(
                "temperature",
                self.temperature,
                "a finite number (<= 0 = greedy)",
            ));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(bad("top_p", self.top_p, "0.0..=1.0 (1.0 = off)"));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(bad("min_p", self.min_p, "0.0..=1.0 (0.0 = off)"));
        }
        if !(0.0..=1.0).contains(&self.typical_p) {
            return Err(bad("typical_p", self.typical_p, "0.0..=1.0 (1.0 = off)"));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(bad(
                "repeat_penalty",
                self.repeat_penalty,
                "a finite number > 0 (1.0 = off)",
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(bad(
                "frequency_penalty",
                self.frequency_penalty,
                "a finite number (0.0 = off)",
            ));
        }
        if !self.presence_penalty.is_finite() {
            return Err(bad(
                "presence_penalty",
                self.presence_penalty,
                "a finite number (0.0 = off)",
            ));
        }
        for &(id, bias) in &self.logit_bias {
            if id as usize >= vocab_size {
                return Err(Error::Usage(format!(
                    "logit bias token {id} is out of range, vocab size is {vocab_size}"
                )));
            }
            if bias.is_nan() {
                return Err(Error::Usage(format!("logit bias for token {id} is NaN")));
            }
        }
        Ok(())
    }
}

/// A seed from the OS-keyed std hasher and the clock, for runs without `--seed`.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.finish()
}

// ----------------------------------------------------------------------------
// RNG: xoshiro256** (Blackman & Vigna), its 256-bit state filled by splitmix64(seed)
// ----------------------------------------------------------------------------

/// splitmix64: state += golden gamma, then a 64-bit finalizer. Used only to expand the seed.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut sm = seed;
        // splitmix64 never yields four zero words in a row, so the state is never all-zero
        Rng {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    /// result = rotl(s1 * 5, 7) * 9, then the xorshift state update
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1): the top 53 bits as a double.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

// ----------------------------------------------------------------------------
// Candidates and the chain steps, each a small function over the candidate list
// ----------------------------------------------------------------------------

/// One surviving token. Ordered by rank: higher logit first, equal logits by lower id, so `sort()` puts
/// the best first, `min()` is the argmax with llama.cpp's "first max wins" tie rule, and every sort gives
/// one answer.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    id: u32,
    logit: f32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .logit
            .total_cmp(&self.logit)
            .then(self.id.cmp(&other.id))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}

/// NaN logits (a broken forward pass) rank as -inf so that they never win and never poison a softmax.
fn candidate(id: usize, logit: f32) -> Candidate {
    Candidate {
        id: id as u32,
        logit: if logit.is_nan() {
            f32::NEG_INFINITY
        } else {
            logit
        },
    }
}

/// All tokens, in id order (unsorted).
fn all_candidates(logits: &[f32], out: &mut Vec<Candidate>) {
    out.clear();
    out.extend(logits.iter().enumerate().map(|(i, &l)| candidate(i, l)));
}

/// top_k straight from the logits, 0 < k < vocab_size: one pass with a k-entry heap whose top is the worst
/// kept candidate (a new token enters only if it outranks that one), then the k sorted best first.
/// O(vocab) compares; this replaces building and partially sorting a 49k-262k candidate list per token.
fn top_k_from_logits(logits: &[f32], k: usize, out: &mut Vec<Candidate>) {
    out.clear();
    let mut heap = BinaryHeap::from(std::mem::take(out)); // reuse the allocation
    for (i, &l) in logits.iter().enumerate() {
        let c = candidate(i, l);
        if heap.len() < k {
            heap.push(c);
        } else if let Some(mut worst) = heap.peek_mut() {
            if c < *worst {
                *worst = c; // PeekMut restores the heap when dropped
            }
        }
    }
    *out = heap.into_sorted_vec(); // ascending by rank = best first
}

/// max logit and sum_i exp(logit_i - max) of the candidates; None when the max is not finite (every token
/// banned with -inf, or a +inf logit), where no softmax exists.
fn softmax_stats(c: &[Candidate]) -> Option<(f32, f64)> {
    let max = c.iter().map(|c| c.logit).fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let sum = c.iter().map(|c| (c.logit - max).exp() as f64).sum();
    Some((max, sum))
}

/// Locally typical sampling (llama.cpp `llama_sampler_typical_apply`): with p_i the softmax of the
/// candidates and H = -sum p_i ln p_i, rank tokens by |-ln p_i - H| (closest to the entropy first) and keep
/// the shortest prefix of that order whose cumulative probability is > p (strictly, as llama.cpp).
/// The result is in typicality order, not sorted by logit.
fn typical(
    c: &mut Vec<Candidate>,
    sorted: &mut bool,
    p: f32,
    scratch: &mut Vec<(f64, f64, usize)>,
) {
    if p.is_nan() || p >= 1.0 || c.len() <= 1 {
        return;
    }
    if !*sorted {
        c.sort_unstable(); // llama.cpp sorts before its softmax here
    }
    let Some((max, sum)) = softmax_stats(c) else {
        return;
    };
    // (score, p_i, index); p_i = 0 (underflow) adds nothing to H and gets score +inf (llama.cpp would
    // compute 0 * ln 0 = NaN there)
    scratch.clear();
    scratch.extend(
        c.iter()
            .enumerate()
            .map(|(i, c)| (0.0, (c.logit - max).exp() as f64 / sum, i)),
    );
    let entropy: f64 = scratch
        .iter()
        .filter(|s| s.1 > 0.0)
        .map(|s| -s.1 * s.1.ln())
        .sum();
    for s in scratch.iter_mut() {
        s.0 = (-s.1.ln() - entropy).abs();
    }
    scratch.sort_by(|a, b| a.0.total_cmp(&b.0)); // stable: equal scores keep the logit order
    let mut cum = 0.0;
    let mut keep = scratch.len();
    for (i, s) in scratch.iter().enumerate() {
        cum += s.1;
        if cum > p as f64 {
            keep = i + 1;
            break;
        }
    }
    let kept: Vec<Candidate> = scratch[..keep].iter().map(|s| c[s.2]).collect();
    *c = kept;
    *sorted = false;
}

/// Nucleus sampling (llama.cpp `llama_sampler_top_p_apply`): sort by probability, keep the shortest prefix
/// whose cumulative probability is >= p. A long unsorted list (> 1024) is sorted only as far as needed: the
/// best 256 first (as llama.cpp; the nucleus is usually among them), then a head twice as long each time the
/// threshold is not reached (llama.cpp sorts everything at that point).
fn top_p(c: &mut Vec<Candidate>, sorted: &mut bool, p: f32) {
    if p.is_nan() || p >= 1.0 || c.len() <= 1 {
        return;
    }
    let Some((max, sum)) = softmax_stats(c) else {
        return;
    };
    // c[..n_sorted] is sorted and outranks everything after it
    let mut n_sorted = c.len();
    if !*sorted {
        n_sorted = if c.len() > 1024 { 256 } else { c.len() };
        sort_head(c, 0, n_sorted);
        *sorted = true;
    }
    let mut cum = 0.0;
    for i in 0..c.len() {
        if i == n_sorted {
            let next = (2 * n_sorted).min(c.len());
            sort_head(c, n_sorted, next);
            n_sorted = next;
        }
        cum += (c[i].logit - max).exp() as f64 / sum;
        if cum >= p as f64 {
            c.truncate(i + 1);
            return;
        }
    }
    // rounding kept cum < p: everything stays (sorted by now)
}

/// Given c[..from] sorted and outranking the rest, extends that to c[..to]: select the best (to - from) of
/// the tail, then sort just those.
fn sort_head(c: &mut [Candidate], from: usize, to: usize) {
    if to < c.len() {
        c[from..].select_nth_unstable(to - from - 1);
    }
    c[from..to].sort_unstable();
}

/// min_p (llama.cpp `llama_sampler_min_p_apply`): p_i >= min_p * p_max  <=>  logit_i >= max + ln(min_p).
/// Keeps the order (and with it `sorted`).
fn min_p(c: &mut Vec<Candidate>, p: f32) {
    if p.is_nan() || p <= 0.0 || c.is_empty() {
        return;
    }
    let max = c.iter().map(|c| c.logit).fold(f32::NEG_INFINITY, f32::max);
    let min_logit = max + p.ln();
    c.retain(|c| c.logit >= min_logit); // the max always stays
}

/// The multinomial draw ("dist"): p_i = softmax(logits) of the candidates, pick the first i whose running
/// sum exceeds u * sum, u uniform in [0, 1). One candidate: taken without a draw, as llama.cpp.
fn dist(c: &[Candidate], rng: &mut Rng, weights: &mut Vec<f32>) -> Option<u32> {
    match c.len() {
        0 => return None,
        1 => return Some(c[0].id),
        _ => {}
    }
    let Some((max, sum)) = softmax_stats(c) else {
        return c.iter().min().map(|c| c.id);
    };
    weights.clear();
    weights.extend(c.iter().map(|c| (c.logit - max).exp()));
    let target = rng.next_f64() * sum;
    let mut run = 0.0;
    for (c, &w) in c.iter().zip(weights.iter()) {
        run += w as f64;
        if run > target {
            return Some(c.id); // strict: a zero-weight token is never picked
        }
    }
    // unreachable in exact arithmetic (run ends at sum > target); rounding: the last token with weight
    c.iter()
        .zip(weights.iter())
        .rev()
        .find(|(_, &w)| w > 0.0)
        .map(|(c, _)| c.id)
}

// ----------------------------------------------------------------------------
// Sampler: owns the parameters, the penalty history, the RNG and reusable buffers
// ----------------------------------------------------------------------------

pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// The last `repeat_last_n` accepted tokens, oldest first
    history: VecDeque<u32>,
    /// Token -> occurrences in `history`
    counts: HashMap<u32, u32>,
    /// (n_candidates,) reused every call
    cands: Vec<Candidate>,
    /// Typical_p work space
    scratch: Vec<(f64, f64, usize)>,
    /// Dist work space
    weights: Vec<f32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler {
            rng: Rng::new(params.seed),
            history: VecDeque::with_capacity(params.repeat_last_n.min(1 << 16)),
            counts: HashMap::new(),
            cands: Vec::new(),
            scratch: Vec::new(),
            weights: Vec::new(),
            params,
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (vocab_size,), which it modifies in place: logit bias, then the
    /// penalties over the accepted history, then top_k -> typical_p -> top_p -> min_p -> temperature on the
    /// candidate list, then the seeded draw; `temperature <= 0` (or NaN) takes the argmax of the survivors
    /// instead, lowest id on ties. It does not `accept` the token: the caller does, as for prompt tokens.
    /// Returns 0 for an empty `logits`.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        self.apply_chain(logits);
        let picked = if self.greedy_temperature() {
            self.cands.iter().min().map(|c| c.id)
        } else {
            dist(&self.cands, &mut self.rng, &mut self.weights)
        };
        picked.unwrap_or(0)
    }

    /// The distribution `sample` would draw from, without drawing: each surviving token with its probability
    /// (temperature applied), in the chain's final order; greedy (or one survivor, or no softmax): the chosen
    /// token alone with 1.0. Modifies `logits` as `sample` does. For comparing other samplers (the GPU one).
    pub fn distribution(&mut self, logits: &mut [f32]) -> Vec<(u32, f64)> {
        self.apply_chain(logits);
        let single = |c: Option<&Candidate>| c.map(|c| vec![(c.id, 1.0)]).unwrap_or_default();
        if self.greedy_temperature() || self.cands.len() <= 1 {
            return single(self.cands.iter().min());
        }
        let Some((max, sum)) = softmax_stats(&self.cands) else {
            return single(self.cands.iter().min());
        };
        self.cands.iter().map(|c| (c.id, (c.logit - max).exp() as f64 / sum)).collect()
    }

    /// Pushes a token into the penalty history (prompt tokens too, as llama.cpp's generation loop does).
    pub fn accept(&mut self, token: u32) {
        let last_n = self.params.repeat_last_n;
        if last_n == 0 {
            return;
        }
        if self.history.len() >= last_n {
            if let Some(old) = self.history.pop_front() {
                if let Some(n) = self.counts.get_mut(&old) {
                    *n -= 1;
                    if *n == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        self.history.push_back(token);
        *self.counts.entry(token).or_insert(0) += 1;
    }

    /// Forgets the history and restarts the RNG from the seed: a new generation with the same prompt gives
    /// the same tokens again.
    pub fn reset(&mut self) {
        self.history.clear();
        self.counts.clear();
        self.rng = Rng::new(self.params.seed);
    }

    /// True when `sample` uses no randomness: temperature <= 0 (argmax) or top_k == 1 (one survivor).
    pub fn is_greedy(&self) -> bool {
        self.greedy_temperature() || self.params.top_k == 1
    }

    /// True when `sample` is exactly the argmax of the logits: greedy, and no bias, penalty or typical-p step
    /// that could move or drop the top token. A backend may then choose the token itself.
    pub fn is_plain_argmax(&self) -> bool {
        let p = &self.params;
        self.greedy_temperature()
            && p.logit_bias.is_empty()
            && (p.repeat_last_n == 0 || (p.repeat_penalty == 1.0 && p.frequency_penalty == 0.0 && p.presence_penalty == 0.0))
            && !(p.typical_p > 0.0 && p.typical_p < 1.0)
    }

    fn greedy_temperature(&self) -> bool {
        let t = self.params.temperature;
        t.is_nan() || t <= 0.0
    }

    /// logit bias and penalties on `logits` in place, then the chain into `self.cands`, whose logits end
    /// divided by the temperature (when it is > 0).
    fn apply_chain(&mut self, logits: &mut [f32]) {
        self.apply_logit_bias(logits);
        self.apply_penalties(logits);

        let p = &self.params;
        let mut sorted = false;
        if p.top_k > 0 && p.top_k < logits.len() {
            top_k_from_logits(logits, p.top_k, &mut self.cands);
            sorted = true;
        } else {
            all_candidates(logits, &mut self.cands);
        }
        typical(&mut self.cands, &mut sorted, p.typical_p, &mut self.scratch);
        top_p(&mut self.cands, &mut sorted, p.top_p);
        min_p(&mut self.cands, p.min_p);
        if !self.greedy_temperature() {
            let t = self.params.temperature;
            for c in &mut self.cands {
                c.logit /= t;
            }
        }
    }

    /// logit[id] += bias; ids outside the vocabulary are skipped (`SamplingParams::validate` reports them).
    fn apply_logit_bias(&self, logits: &mut [f32]) {
        for &(id, bias) in &self.params.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
    }

    /// llama.cpp `llama_sampler_penalties_apply`, for each token with count > 0 in the history:
    /// logit = logit <= 0 ? logit * repeat_penalty : logit / repeat_penalty;
    /// logit -= count * frequency_penalty + presence_penalty.
    fn apply_penalties(&self, logits: &mut [f32]) {
        let p = &self.params;
        if p.repeat_last_n == 0
            || (p.repeat_penalty == 1.0 && p.frequency_penalty == 0.0 && p.presence_penalty == 0.0)
        {
            return;
        }
        for (&id, &count) in &self.counts {
            let Some(l) = logits.get_mut(id as usize) else {
                continue;
            };
            if *l <= 0.0 {
                *l *= p.repeat_penalty;
            } else {
                *l /= p.repeat_penalty;
            }
            *l -= count as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
}

// ----------------------------------------------------------------------------
// Tests
// ----------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(seed: u64) -> SamplingParams {
        SamplingParams::plain(seed)
    }

    /// logits = ln(probs) + 3: softmax gives back `probs` exactly up to rounding; the +3 shows that only
    /// logit differences matter.
    fn logits_of(probs: &[f64]) -> Vec<f32> {
        probs.iter().map(|p| (p.ln() + 3.0) as f32).collect()
    }

    /// probs 0.5, 0.25, 0.15, 0.07, 0.03 for ids 0..5; the worked examples below use it.
    const P5: [f64; 5] = [0.5, 0.25, 0.15, 0.07, 0.03];

    /// Ids that survive the chain, sorted.
    fn survivors(params: SamplingParams, logits: &[f32]) -> Vec<u32> {
        let mut s = Sampler::new(params);
        let mut l = logits.to_vec();
        s.apply_chain(&mut l);
        let mut ids: Vec<u32> = s.cands.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids
    }

    /// Empirical frequencies of `n` draws.
    fn frequencies(params: SamplingParams, logits: &[f32], n: usize) -> Vec<f64> {
        let mut s = Sampler::new(params);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            let mut l = logits.to_vec();
            counts[s.sample(&mut l) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    }

    /// 100k draws: the binomial standard error is <= sqrt(0.25 / 1e5) = 0.0016, so 0.01 is > 6 sigma; tokens
    /// with expected probability 0 must never appear.
    fn assert_distribution(params: SamplingParams, logits: &[f32], expected: &[f64]) {
        let got = frequencies(params, logits, 100_000);
        for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
            if e == 0.0 {
                assert_eq!(g, 0.0, "token {i} was truncated but drawn: {got:?}");
            }
            assert!(
                (g - e).abs() < 0.01,
                "token {i}: got {g}, expected {e} (all: {got:?})"
            );
        }
    }

    fn normalize(v: &[f64]) -> Vec<f64> {
        let s: f64 = v.iter().sum();
        v.iter().map(|x| x / s).collect()
    }

    fn softmax(logits: &[f32], temp: f64) -> Vec<f64> {
        let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        normalize(
            &logits
                .iter()
                .map(|&l| ((l as f64 - m) / temp).exp())
                .collect::<Vec<_>>(),
        )
    }

    // --- RNG ---

    #[test]
    fn rng_matches_published_vectors() {
        // splitmix64 from state 0 and xoshiro256** from state {1, 2, 3, 4}: the reference outputs of the
        // authors' C code (also the test vectors of the rand_xoshiro crate)
        let mut sm = 0u64;
        let got: Vec<u64> = (0..4).map(|_| splitmix64(&mut sm)).collect();
        assert_eq!(
            got,
            [
                0xe220a8397b1dcdaf,
                0x6e789e6aa1b965f4,
                0x06c45d188009454f,
                0xf88bb8a8724c81ec
            ]
        );
        let mut rng = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn rng_uniform_is_in_unit_interval_with_mean_one_half() {
        let mut rng = Rng::new(7);
        let xs: Vec<f64> = (0..100_000).map(|_| rng.next_f64()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}"); // sd of the mean = 0.289 / 316 = 0.0009
    }

    // --- greedy ---

    #[test]
    fn greedy_picks_argmax_and_lowest_id_on_ties() {
        let mut rng = Rng::new(1);
        let logits: Vec<f32> = (0..49152)
            .map(|_| (rng.next_f64() * 20.0 - 10.0) as f32)
            .collect();
        let argmax = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
        for params in [
            SamplingParams {
                temperature: 0.0,
                ..plain(1)
            },
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(params);
            assert!(s.is_greedy());
            for _ in 0..3 {
                assert_eq!(s.sample(&mut logits.clone()), argmax as u32);
            }
        }
        // ties: ids 1 and 3 share the max; llama.cpp keeps the first max it meets
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [1.0, 3.0, 2.0, 3.0]), 1);
    }

    #[test]
    fn top_k_1_equals_greedy_for_any_temperature() {
        let logits = [0.3f32, 2.0, 1.9, -1.0, 2.0, 0.0]; // argmax: id 1 (id 4 ties, higher id)
        for temp in [0.1f32, 0.8, 1.5, 10.0, 1000.0] {
            for seed in 0..20 {
                let mut s = Sampler::new(SamplingParams {
                    temperature: temp,
                    top_k: 1,
                    ..plain(seed)
                });
                assert!(s.is_greedy());
                assert_eq!(s.sample(&mut logits.to_vec()), 1, "temp {temp} seed {seed}");
            }
        }
    }

    // --- distributions ---

    #[test]
    fn temperature_draws_follow_softmax_of_scaled_logits() {
        let logits = [1.0f32, 2.0, 0.5, 3.0, -1.0];
        for temp in [1.0f32, 0.5, 2.0] {
            assert_distribution(
                SamplingParams {
                    temperature: temp,
                    ..plain(11)
                },
                &logits,
                &softmax(&logits, temp as f64),
            );
        }
    }

    #[test]
    fn top_k_draws_follow_softmax_of_the_k_best() {
        let logits = [1.0f32, 2.0, 0.5, 3.0, -1.0];
        // k = 3 keeps ids 3, 1, 0 (logits 3, 2, 1): p = e^0, e^-1, e^-2 normalized = 0.665, 0.245, 0.090
        let e = normalize(&[(-2.0f64).exp(), (-1.0f64).exp(), 0.0, 1.0, 0.0]);
        assert_distribution(
            SamplingParams {
                top_k: 3,
                ..plain(12)
            },
            &logits,
            &e,
        );
    }

    #[test]
    fn top_p_draws_follow_renormalized_nucleus() {
        // P5 sorted: cum 0.50, 0.75, 0.90 >= 0.8 -> ids {0, 1, 2}; renormalized by 0.9: 0.556, 0.278, 0.167
        let e = normalize(&[0.5, 0.25, 0.15, 0.0, 0.0]);
        assert_distribution(
            SamplingParams {
                top_p: 0.8,
                ..plain(13)
            },
            &logits_of(&P5),
            &e,
        );
    }

    #[test]
    fn min_p_draws_follow_renormalized_survivors() {
        // min_p 0.1: threshold 0.1 * 0.5 = 0.05 -> 0.07 stays, 0.03 goes; renormalized by 0.97
        let e = normalize(&[0.5, 0.25, 0.15, 0.07, 0.0]);
        assert_distribution(
            SamplingParams {
                min_p: 0.1,
                ..plain(14)
            },
            &logits_of(&P5),
            &e,
        );
    }

    #[test]
    fn typical_draws_follow_renormalized_typical_set() {
        // typical 0.5 keeps {1, 0} (worked in `typical_keeps_the_worked_sets`): 0.25 / 0.75, 0.5 / 0.75
        let e = normalize(&[0.5, 0.25, 0.0, 0.0, 0.0]);
        assert_distribution(
            SamplingParams {
                typical_p: 0.5,
                ..plain(15)
            },
            &logits_of(&P5),
            &e,
        );
    }

    #[test]
    fn full_chain_draws_match_the_worked_example() {
        // P5 through top_k 4 -> top_p 0.9 -> min_p 0.35 -> temperature 0.5:
        //   top_k 4: ids 0..4, renormalized by 0.97: 0.5155, 0.2577, 0.1546, 0.0722
        //   top_p 0.9 (on those): cum 0.5155, 0.7732, 0.9278 >= 0.9 -> ids {0, 1, 2}
        //   min_p 0.35: threshold 0.35 * 0.5155 = 0.1804 (same ratio as 0.35 * 0.5) -> 0.1546 goes: ids {0, 1}
        //   temperature 0.5 squares the probabilities: 0.25, 0.0625 -> 0.8, 0.2
        let params = SamplingParams {
            temperature: 0.5,
            top_k: 4,
            top_p: 0.9,
            min_p: 0.35,
            ..plain(16)
        };
        assert_eq!(survivors(params.clone(), &logits_of(&P5)), [0, 1]);
        assert_distribution(params, &logits_of(&P5), &[0.8, 0.2, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn default_params_draw_from_top_40_min_p_and_temperature() {
        // 100 tokens, logit_i = -0.1 * i. top_k 40 keeps ids 0..40. top_p 0.95 on those: p_i ∝ e^(-0.1 i), so
        // cum(i) = (1 - e^(-0.1 (i + 1))) / (1 - e^-4): cum(25) = 0.9257 / 0.9817 = 0.9430 < 0.95,
        // cum(26) = 0.9328 / 0.9817 = 0.9502 >= 0.95 -> ids 0..=26.
        // min_p 0.05: ln 0.05 = -3.0 -> keeps logit >= -3.0 -> all of 0..=26 (logit -2.6) stay.
        // temperature 0.8: p_i ∝ exp(-0.125 i) over i = 0..=26.
        let logits: Vec<f32> = (0..100).map(|i| -0.1 * i as f32).collect();
        let params = SamplingParams {
            seed: 17,
            ..Default::default()
        };
        assert_eq!(
            survivors(params.clone(), &logits),
            (0..=26).collect::<Vec<u32>>()
        );
        let mut e: Vec<f64> = (0..100)
            .map(|i| {
                if i <= 26 {
                    (-0.125 * i as f64).exp()
                } else {
                    0.0
                }
            })
            .collect();
        e = normalize(&e);
        assert_distribution(params, &logits, &e);
    }

    // --- the sets each step keeps ---

    #[test]
    fn top_k_keeps_the_k_highest_and_is_off_at_0_or_vocab() {
        let logits = logits_of(&P5);
        assert_eq!(
            survivors(
                SamplingParams {
                    top_k: 3,
                    ..plain(0)
                },
                &logits
            ),
            [0, 1, 2]
        );
        assert_eq!(
            survivors(
                SamplingParams {
                    top_k: 0,
                    ..plain(0)
                },
                &logits
            ),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(
            survivors(
                SamplingParams {
                    top_k: 5,
                    ..plain(0)
                },
                &logits
            ),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(
            survivors(
                SamplingParams {
                    top_k: 99,
                    ..plain(0)
                },
                &logits
            ),
            [0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn top_k_on_a_large_vocab_matches_a_full_sort() {
        // logits quantized to 1/8 so that many tie: the heap must keep the lowest ids among equals
        let mut rng = Rng::new(3);
        let logits: Vec<f32> = (0..262_144)
            .map(|_| ((rng.next_f64() * 160.0).floor() / 8.0 - 10.0) as f32)
            .collect();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
        for k in [1, 40, 1000] {
            let mut want: Vec<u32> = order[..k].iter().map(|&i| i as u32).collect();
            want.sort_unstable();
            assert_eq!(
                survivors(
                    SamplingParams {
                        top_k: k,
                        ..plain(0)
                    },
                    &logits
                ),
                want,
                "k = {k}"
            );
        }
    }

    #[test]
    fn top_p_keeps_the_worked_sets() {
        // P5 cumulative in order: 0.50, 0.75, 0.90, 0.97, 1.00
        let logits = logits_of(&P5);
        let set = |p| {
            survivors(
                SamplingParams {
                    top_p: p,
                    ..plain(0)
                },
                &logits,
            )
        };
        assert_eq!(set(0.3), [0]); //        0.50 >= 0.3
        assert_eq!(set(0.6), [0, 1]); //     0.75 >= 0.6
        assert_eq!(set(0.8), [0, 1, 2]); //  0.90 >= 0.8
        assert_eq!(set(0.95), [0, 1, 2, 3]); // 0.97 >= 0.95
        assert_eq!(set(0.99), [0, 1, 2, 3, 4]); // 1.00 >= 0.99
        assert_eq!(set(1.0), [0, 1, 2, 3, 4]); // off
    }

    #[test]
    fn top_p_uses_probabilities_of_the_surviving_candidates() {
        // after top_k 2 the candidates are 0.5 and 0.25 -> renormalized 2/3, 1/3. top_p 0.6: 2/3 >= 0.6 keeps
        // id 0 alone; on the original probabilities 0.5 < 0.6 would have kept two
        let params = SamplingParams {
            top_k: 2,
            top_p: 0.6,
            ..plain(0)
        };
        assert_eq!(survivors(params, &logits_of(&P5)), [0]);
    }

    #[test]
    fn top_p_on_a_large_unsorted_list_matches_a_full_sort() {
        // 4096 candidates (> 1024: the partial-sort path), logits uniform in [0, 8): the best 256 (logit >= 7.5)
        // hold about (e^8 - e^7.5) / (e^8 - 1) = 0.39 of the mass, so p = 0.3 is reached inside them; p = 0.7
        // needs logit >= 8 + ln 0.3 = 6.8, about 600 tokens (the head grown to 1024); p = 0.999 needs nearly
        // all. Oracle: sort everything, accumulate in f64.
        let mut rng = Rng::new(5);
        let logits: Vec<f32> = (0..4096).map(|_| (rng.next_f64() * 8.0) as f32).collect();
        let probs = softmax(&logits, 1.0);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        for p in [0.3f32, 0.7, 0.999] {
            let mut cum = 0.0;
            let n = order.iter().position(|&i| {
                cum += probs[i];
                cum >= p as f64
            });
            let mut want: Vec<u32> = order[..n.unwrap() + 1].iter().map(|&i| i as u32).collect();
            want.sort_unstable();
            assert!(want.len() > 1 && want.len() < 4096);
            assert_eq!(
                survivors(
                    SamplingParams {
                        top_p: p,
                        ..plain(0)
                    },
                    &logits
                ),
                want,
                "p = {p}"
            );
        }
    }

    #[test]
    fn min_p_keeps_the_worked_sets() {
        // p_max = 0.5; min_p m keeps p >= 0.5 m
        let logits = logits_of(&P5);
        let set = |m| {
            survivors(
                SamplingParams {
                    min_p: m,
                    ..plain(0)
                },
                &logits,
            )
        };
        assert_eq!(set(0.05), [0, 1, 2, 3, 4]); // >= 0.025: 0.03 stays
        assert_eq!(set(0.1), [0, 1, 2, 3]); //     >= 0.05
        assert_eq!(set(0.2), [0, 1, 2]); //        >= 0.10
        assert_eq!(set(0.4), [0, 1]); //           >= 0.20
        assert_eq!(set(0.9), [0]); //              >= 0.45
        assert_eq!(set(0.0), [0, 1, 2, 3, 4]); //  off
    }

    #[test]
    fn typical_keeps_the_worked_sets() {
        // P5: -p ln p = 0.34657, 0.34657, 0.28457, 0.18615, 0.10520 -> H = 1.26906
        // -ln p = 0.69315, 1.38629, 1.89712, 2.65926, 3.50656
        // |-ln p - H| = 0.57591, 0.11723, 0.62806, 1.39020, 2.23750 -> order ids 1, 0, 2, 3, 4
        // cumulative in that order: 0.25, 0.75, 0.90, 0.97, 1.00; keep up to the first > p
        let logits = logits_of(&P5);
        let set = |p| {
            survivors(
                SamplingParams {
                    typical_p: p,
                    ..plain(0)
                },
                &logits,
            )
        };
        assert_eq!(set(0.2), [1]); // the most probable token is not typical enough: dropped
        assert_eq!(set(0.5), [0, 1]);
        assert_eq!(set(0.8), [0, 1, 2]);
        assert_eq!(set(0.95), [0, 1, 2, 3]);
        assert_eq!(set(1.0), [0, 1, 2, 3, 4]); // off
    }

    #[test]
    fn greedy_still_runs_the_chain_like_llama_cpp() {
        // llama.cpp applies temperature (and its argmax) after the other steps: typical 0.2 leaves only id 1
        let params = SamplingParams {
            temperature: 0.0,
            typical_p: 0.2,
            ..plain(0)
        };
        assert_eq!(Sampler::new(params).sample(&mut logits_of(&P5)), 1);
    }

    // --- penalties and bias ---

    #[test]
    fn penalties_change_logits_exactly_as_the_formulas() {
        let params = SamplingParams {
            temperature: 0.0,
            repeat_penalty: 2.0,
            repeat_last_n: 4,
            frequency_penalty: 0.1,
            presence_penalty: 0.3,
            ..plain(0)
        };
        let mut s = Sampler::new(params);
        for t in [4, 0, 1, 0, 3] {
            s.accept(t);
        }
        // window of 4: [0, 1, 0, 3] -> counts 0: 2, 1: 1, 3: 1; token 4 has left the window
        let mut logits = [2.0f32, -1.0, 0.5, 0.0, 3.0];
        assert_eq!(s.sample(&mut logits), 4);
        let want = [
            2.0 / 2.0 - (2.0 * 0.1 + 0.3), // 0.5: positive -> divided
            -2.0 - (0.1 + 0.3),            // -1.0 * 2.0 - 0.4 = -2.4: negative -> multiplied
            0.5,                           // not in the window
            0.0 * 2.0 - (0.1 + 0.3),       // -0.4: zero counts as <= 0
            3.0,                           // left the window
        ];
        for (g, w) in logits.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{logits:?} vs {want:?}");
        }
        // reset forgets the history: nothing changes
        s.reset();
        let mut logits = [2.0f32, -1.0, 0.5, 0.0, 3.0];
        s.sample(&mut logits);
        assert_eq!(logits, [2.0, -1.0, 0.5, 0.0, 3.0]);
    }

    #[test]
    fn repeat_penalty_can_change_the_argmax_and_last_n_0_turns_it_off() {
        // 1.0 / 1.2 = 0.833 < 0.9
        let params = SamplingParams {
            temperature: 0.0,
            repeat_penalty: 1.2,
            ..plain(0)
        };
        let mut s = Sampler::new(params.clone());
        s.accept(0);
        assert_eq!(s.sample(&mut [1.0, 0.9]), 1);
        let mut s = Sampler::new(SamplingParams {
            repeat_last_n: 0,
            ..params
        });
        s.accept(0);
        assert_eq!(s.sample(&mut [1.0, 0.9]), 0);
    }

    #[test]
    fn logit_bias_applies_and_neg_inf_bans() {
        let bias = vec![(0, 5.0), (2, f32::NEG_INFINITY), (99, 1.0)]; // 99: outside the vocab, ignored
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            logit_bias: bias.clone(),
            ..plain(0)
        });
        let mut logits = [1.0f32, 2.0, 3.0];
        assert_eq!(s.sample(&mut logits), 0);
        assert_eq!(logits, [6.0, 2.0, f32::NEG_INFINITY]);
        // sampled: p(0) = e^6 / (e^6 + e^2) = 0.982, id 2 never
        let e = normalize(&[6.0f64.exp(), 2.0f64.exp(), 0.0]);
        assert_distribution(
            SamplingParams {
                logit_bias: bias,
                ..plain(18)
            },
            &[1.0, 2.0, 3.0],
            &e,
        );
    }

    #[test]
    fn all_tokens_banned_or_nan_does_not_panic() {
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.9,
            typical_p: 0.5,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [f32::NEG_INFINITY; 4]), 0);
        let id = s.sample(&mut [f32::NAN, 1.0, f32::NAN]);
        assert_eq!(id, 1);
        assert_eq!(s.sample(&mut []), 0);
        let mut s = Sampler::new(SamplingParams {
            temperature: f32::NAN,
            top_p: f32::NAN,
            min_p: f32::NAN,
            ..plain(0)
        });
        assert_eq!(s.sample(&mut [0.0, 2.0, 1.0]), 1);
    }

    // --- seeds ---

    #[test]
    fn same_seed_reproduces_and_different_seeds_differ() {
        let logits = [0.0f32, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]; // flat: every draw is uncertain
        let run = |s: &mut Sampler| {
            (0..200)
                .map(|_| s.sample(&mut logits.to_vec()))
                .collect::<Vec<u32>>()
        };
        let mut a = Sampler::new(plain(42));
        let first = run(&mut a);
        assert_eq!(first, run(&mut Sampler::new(plain(42))));
        assert_ne!(first, run(&mut Sampler::new(plain(43))));
        a.reset();
        assert_eq!(first, run(&mut a), "reset restarts the RNG from the seed");
    }

    #[test]
    fn validate_rejects_out_of_range_values() {
        assert!(SamplingParams::default().validate(10).is_ok());
        let bad = [
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplingParams {
                min_p: -0.1,
                ..Default::default()
            },
            SamplingParams {
                typical_p: f32::NAN,
                ..Default::default()
            },
            SamplingParams {
                temperature: f32::INFINITY,
                ..Default::default()
            },
            SamplingParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            SamplingParams {
                logit_bias: vec![(10, 1.0)],
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(matches!(p.validate(10), Err(Error::Usage(_))), "{p:?}");
        }
    }
}
