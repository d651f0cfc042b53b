//! Everything the native decoder knows about dialects, limits and the wire
//! schema, handed over from Python once (schemas/fastpath.py builds it from
//! dialects.py, the TraceDecoder's settings and the protobuf descriptors), so
//! that the key lists and value maps have one source of truth.

use crate::wire::Schema;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash (rustc's): a fast non-cryptographic hash for short keys.
#[derive(Default, Clone, Copy)]
pub struct Fx(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Fx {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for Fx {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FxBuild = BuildHasherDefault<Fx>;
pub type FxMap<K, V> = HashMap<K, V, FxBuild>;

/// A key id; `NO_KEY` for a key name that is in no table (never present).
pub type KeyId = u16;
pub const NO_KEY: KeyId = u16::MAX;

/// Key ids of the dialect tables (dialects.py names).
#[derive(Default)]
pub struct Keys {
    pub provider: Vec<KeyId>,
    pub response_model: Vec<KeyId>,
    pub request_model: Vec<KeyId>,
    pub input_tokens: Vec<KeyId>,
    pub output_tokens: Vec<KeyId>,
    pub total_tokens: Vec<KeyId>,
    pub cached_tokens: Vec<KeyId>,
    pub reasoning_tokens: Vec<KeyId>,
    pub cost: Vec<KeyId>,
    pub agent: Vec<KeyId>,
    pub tool: Vec<KeyId>,
    pub tool_args: Vec<KeyId>,
    pub session: Vec<KeyId>,
    pub ttft_seconds: Vec<KeyId>,
    pub error_type: Vec<KeyId>,
    pub environment: Vec<KeyId>,
    pub tenant: Vec<KeyId>,
    pub operation_name: KeyId,
    pub openinference_kind: KeyId,
    pub traceloop_kind: KeyId,
    pub traceloop_entity: KeyId,
    pub llm_request_type: KeyId,
    pub langfuse_type: KeyId,
    pub langfuse_level: KeyId,
    pub langfuse_usage: KeyId,
    pub langfuse_cost: KeyId,
    pub langfuse_completion_start: KeyId,
    pub service_name: KeyId,
}

#[derive(Default)]
pub struct Maps {
    pub operations: HashMap<String, String>,
    pub openinference_ops: HashMap<String, String>,
    pub llm_request_types: HashMap<String, String>,
    pub traceloop_ops: HashMap<String, String>,
    pub langfuse_ops: HashMap<String, String>,
    pub provider_aliases: HashMap<String, String>,
}

/// Keys that `build_call` reads from Langfuse's usage/cost objects.
#[derive(Default)]
pub struct UsageKeys {
    pub input: (String, String),
    pub output: (String, String),
    pub total: String,
    pub cached: (String, String),
    pub reasoning: String,
    pub cost_total: String,
}

/// String constants of the Python code that are not in a table.
#[derive(Default)]
pub struct Literals {
    pub chat: String,
    pub other: String,
    pub default_tenant: String,
    pub error_type: String,
    pub traceloop_agent: String,
    pub traceloop_tool: String,
    pub level_error: String,
    pub tool_operation: String,
    pub status_error: i32,
}

#[derive(Default)]
pub struct Config {
    pub schema: Schema,
    /// AnyValue oneof members other than fields 1..7: (field, wire type).
    /// Setting one of them makes `_any_value` return None.
    pub anyvalue_other: Vec<(u32, u8)>,
    pub key_ids: FxMap<Vec<u8>, KeyId>,
    pub span_kept: Vec<bool>,
    pub resource_kept: Vec<bool>,
    pub signal: Vec<bool>,
    pub k: Keys,
    pub maps: Maps,
    pub usage: UsageKeys,
    pub lit: Literals,
    pub max_tokens: i64,
    pub max_cost: f64,
    pub max_attr: usize,
    /// `Limits.max_dimension_bytes`: the longest dimension value (UTF-8 bytes),
    /// and trace id (hex), a span may carry.
    pub max_dim: usize,
    pub past_skew: f64,
    pub future_skew: f64,
    pub log_gamma: f64,
    pub min_value: f64,
    pub max_exemplars: usize,
    /// `stats.tool_key`: the operation whose calls are keyed by tool name,
    /// and the longest name kept (in characters).
    pub tool_key_operation: String,
    pub max_tool_key_chars: usize,
    pub llm_operations: HashSet<String>,
    pub clock_needed: bool,
}

impl Config {
    #[inline]
    pub fn key_id(&self, key: &[u8]) -> KeyId {
        match self.key_ids.get(key) {
            Some(&id) => id,
            None => NO_KEY,
        }
    }

    pub fn n_keys(&self) -> usize {
        self.span_kept.len()
    }

    /// Intern a key name; returns its id.
    pub fn intern(&mut self, key: &str) -> KeyId {
        if let Some(&id) = self.key_ids.get(key.as_bytes()) {
            return id;
        }
        let id = self.span_kept.len() as KeyId;
        self.key_ids.insert(key.as_bytes().to_vec(), id);
        self.span_kept.push(false);
        self.resource_kept.push(false);
        self.signal.push(false);
        id
    }

    #[inline]
    pub fn is_other_oneof(&self, field: u32, wt: u8) -> bool {
        self.anyvalue_other
            .iter()
            .any(|&(f, w)| f == field && w == wt)
    }
}
