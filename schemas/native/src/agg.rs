//! Pre-aggregation of a batch's calls: `operators.stats.preaggregate` and
//! `operators.sessions.session_partials`, fed in call order, so that every
//! order-dependent field (a session's first service, agent and trace id, the
//! float sums) comes out as in Python.

use crate::config::{Config, Fx, FxMap};
use crate::span::Call;
use std::hash::Hasher;

#[derive(Default, Clone)]
pub struct Sketch {
    pub bins: FxMap<i64, u64>,
    pub zeros: u64,
    pub count: u64,
}

impl Sketch {
    /// `QuantileSketch.add`; f64::ln is glibc's log(), like Python's math.log.
    #[inline]
    pub fn add(&mut self, value: f64, log_gamma: f64, min_value: f64) {
        self.count += 1;
        if value <= min_value {
            self.zeros += 1;
            return;
        }
        let index = (value.ln() / log_gamma).ceil() as i64;
        *self.bins.entry(index).or_insert(0) += 1;
    }
}

pub struct Group {
    pub tenant: String,
    pub service: String,
    pub provider: String,
    pub model: String,
    pub operation: String,
    /// `stats.tool_key`: the tool name of a tool call, '' for any other operation
    pub tool: String,
    pub window: u64,
    pub calls: u64,
    pub errors: u64,
    pub input: i128,
    pub output: i128,
    pub cached: i128,
    pub reasoning: i128,
    pub cost: f64,
    pub unpriced: u64,
    pub latency: Sketch,
    pub latency_max: f64,
    pub ttft: Option<Sketch>,
    /// (duration_ms, trace_id), largest first
    pub exemplars: Vec<(f64, String)>,
    next: usize,
}

pub struct Session {
    pub key: String,
    pub tenant: String,
    pub service: String,
    pub agent: String,
    pub trace_id: String,
    pub first_ns: u64,
    pub last_ns: u64,
    pub llm_calls: u64,
    pub tool_calls: u64,
    pub errors: u64,
    pub input: i128,
    pub output: i128,
    pub cost: f64,
    pub unpriced: u64,
    pub tool_events: Vec<(u64, String, String)>,
    /// (end_ns, cost) of each LLM call
    pub llm_events: Vec<(u64, Option<f64>)>,
}

impl Session {
    pub fn session_id(&self) -> &str {
        // SessionPartial(call.tenant, key.split("\x1f", 1)[1])
        match self.key.find('\x1f') {
            Some(i) => &self.key[i + 1..],
            None => "",
        }
    }
}

const NONE: usize = usize::MAX;

#[derive(Default)]
pub struct Agg {
    pub window_ns: u64,
    pub groups: Vec<Group>,
    index: FxMap<u64, usize>,
    pub sessions: Vec<Session>,
    session_index: FxMap<String, usize>,
    key_buf: String,
    pub max_event_ns: u64,
}

/// The UTC day of `end_ns / 1e9`: the float `PriceTable.apply` looks prices up at.
#[inline]
pub fn day_of(end_ns: u64) -> i64 {
    let epoch_s = end_ns as f64 / 1e9;
    let mut d = (epoch_s / 86400.0).floor() as i64;
    // The quotient is rounded, so floor() can be one off right next to a
    // midnight; the products below are exact.
    if (d as f64) * 86400.0 > epoch_s {
        d -= 1;
    } else if ((d + 1) as f64) * 86400.0 <= epoch_s {
        d += 1;
    }
    d
}

/// `StatsAcc._offer_exemplar`: keep the `max` largest (duration, trace_id).
fn offer_exemplar(exemplars: &mut Vec<(f64, String)>, max: usize, duration: f64, trace_id: &str) {
    if exemplars.len() < max {
        exemplars.push((duration, trace_id.to_owned()));
    } else if let Some(last) = exemplars.last_mut() {
        if duration > last.0 || (duration == last.0 && trace_id > last.1.as_str()) {
            *last = (duration, trace_id.to_owned());
        } else {
            return;
        }
    } else {
        return;
    }
    exemplars.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| b.1.cmp(&a.1))
    });
}

/// `stats.tool_key`: the call's tool name, cut to `max_tool_key_chars`
/// characters (code points, as Python slices a str), for tool calls; else "".
#[inline]
fn tool_key<'c>(cfg: &Config, call: &'c Call<'_>) -> &'c str {
    if *call.operation != *cfg.tool_key_operation {
        return "";
    }
    let tool: &str = &call.tool;
    match tool.char_indices().nth(cfg.max_tool_key_chars) {
        Some((end, _)) => &tool[..end],
        None => tool,
    }
}

impl Agg {
    pub fn new(window_ns: u64) -> Self {
        Agg {
            window_ns,
            ..Default::default()
        }
    }

    pub fn add(&mut self, cfg: &Config, call: &Call<'_>) {
        if call.end_ns > self.max_event_ns {
            self.max_event_ns = call.end_ns;
        }
        let window = call.end_ns - call.end_ns % self.window_ns;
        self.add_group(cfg, call, window);
        self.add_session(cfg, call);
    }

    fn add_group(&mut self, cfg: &Config, call: &Call<'_>, window: u64) {
        let tool = tool_key(cfg, call);
        let mut h = Fx::default();
        for s in [
            &*call.tenant,
            &*call.service,
            &*call.provider,
            &*call.model,
            &*call.operation,
            tool,
        ] {
            h.write(s.as_bytes());
            h.write_u8(0xff);
        }
        h.write_u64(window);
        let hash = h.finish();
        let head = *self.index.get(&hash).unwrap_or(&NONE);
        let mut at = head;
        while at != NONE {
            let g = &self.groups[at];
            if g.window == window
                && g.model == *call.model
                && g.operation == *call.operation
                && g.tool == tool
                && g.provider == *call.provider
                && g.service == *call.service
                && g.tenant == *call.tenant
            {
                break;
            }
            at = g.next;
        }
        if at == NONE {
            at = self.groups.len();
            self.groups.push(Group {
                tenant: call.tenant.to_string(),
                service: call.service.to_string(),
                provider: call.provider.to_string(),
                model: call.model.to_string(),
                operation: call.operation.to_string(),
                tool: tool.to_owned(),
                window,
                calls: 0,
                errors: 0,
                input: 0,
                output: 0,
                cached: 0,
                reasoning: 0,
                cost: 0.0,
                unpriced: 0,
                latency: Sketch::default(),
                latency_max: 0.0,
                ttft: None,
                exemplars: Vec::new(),
                next: head,
            });
            self.index.insert(hash, at);
        }
        // StatsAcc.add
        let g = &mut self.groups[at];
        g.calls += 1;
        if call.is_error {
            g.errors += 1;
        }
        g.input += call.input as i128;
        g.output += call.output as i128;
        g.cached += call.cached as i128;
        g.reasoning += call.reasoning as i128;
        match call.cost {
            Some(c) => g.cost += c,
            None => g.unpriced += 1,
        }
        let duration = call.duration_ms;
        g.latency.add(duration, cfg.log_gamma, cfg.min_value);
        if duration > g.latency_max {
            g.latency_max = duration;
        }
        if let Some(t) = call.ttft_ms {
            g.ttft
                .get_or_insert_with(Sketch::default)
                .add(t, cfg.log_gamma, cfg.min_value);
        }
        if !call.trace_id.is_empty() {
            offer_exemplar(
                &mut g.exemplars,
                cfg.max_exemplars,
                duration,
                &call.trace_id,
            );
        }
    }

    fn add_session(&mut self, cfg: &Config, call: &Call<'_>) {
        // session_key(call), built in a reused buffer
        let mut key = std::mem::take(&mut self.key_buf);
        key.clear();
        key.push_str(&call.tenant);
        key.push('\x1f');
        if !call.session_id.is_empty() {
            key.push_str(&call.session_id);
        } else if !call.trace_id.is_empty() {
            key.push_str("trace:");
            key.push_str(&call.trace_id);
        } else {
            self.key_buf = key;
            return;
        }
        let at = match self.session_index.get(key.as_str()) {
            Some(&at) => at,
            None => {
                let at = self.sessions.len();
                self.session_index.insert(key.clone(), at);
                self.sessions.push(Session {
                    key: key.clone(),
                    tenant: call.tenant.to_string(),
                    service: String::new(),
                    agent: String::new(),
                    trace_id: String::new(),
                    first_ns: 0,
                    last_ns: 0,
                    llm_calls: 0,
                    tool_calls: 0,
                    errors: 0,
                    input: 0,
                    output: 0,
                    cost: 0.0,
                    unpriced: 0,
                    tool_events: Vec::new(),
                    llm_events: Vec::new(),
                });
                at
            }
        };
        self.key_buf = key;
        // SessionPartial.add
        let s = &mut self.sessions[at];
        if s.service.is_empty() {
            s.service.push_str(&call.service);
        }
        if s.agent.is_empty() {
            s.agent.push_str(&call.agent);
        }
        if s.trace_id.is_empty() {
            s.trace_id.push_str(&call.trace_id);
        }
        if s.first_ns == 0 || call.end_ns < s.first_ns {
            s.first_ns = call.end_ns;
        }
        if call.end_ns > s.last_ns {
            s.last_ns = call.end_ns;
        }
        if call.is_error {
            s.errors += 1;
        }
        if *call.operation == *cfg.lit.tool_operation {
            s.tool_calls += 1;
            s.tool_events.push((
                call.end_ns,
                call.tool.to_string(),
                call.tool_args_hash.to_string(),
            ));
            return;
        }
        if cfg.llm_operations.contains(&*call.operation) {
            s.llm_calls += 1;
            s.llm_events.push((call.end_ns, call.cost));
            s.input += call.input as i128;
            s.output += call.output as i128;
            match call.cost {
                Some(c) => s.cost += c,
                None => s.unpriced += 1,
            }
        }
    }
}
