//! Access-log filters (`AccessLogFilter`), compiled with their runtime values and applied
//! to each record in control before it is formatted.

use zerohop_proto::accesslog::Record;

/// `ComparisonFilter.op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmp {
    Eq,
    Ge,
    Le,
    Ne,
}

impl Cmp {
    fn holds(self, a: u64, b: u64) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ge => a >= b,
            Cmp::Le => a <= b,
            Cmp::Ne => a != b,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `status_code_filter` (a stream without a response counts as 0, as Envoy's).
    Status(Cmp, u64),
    /// `duration_filter`, in milliseconds.
    Duration(Cmp, u64),
    /// `not_health_check_filter`: zerohop answers no request as a health check (it has no
    /// health_check HTTP filter), so every record passes.
    NotHealthCheck,
    /// `runtime_filter`: `numerator / denominator` of the records, chosen by the request's
    /// `x-request-id` (at `request_id`) unless `use_independent_randomness`.
    Runtime {
        numerator: u64,
        denominator: u64,
        request_id: Option<u8>,
    },
    /// `response_flag_filter`: any of the flags (any flag at all when the mask is 0).
    Flags(u32),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

impl Filter {
    pub fn passes(&self, rec: &Record<'_>, random: &mut impl FnMut() -> u64) -> bool {
        match self {
            Filter::Status(op, v) => op.holds(u64::from(rec.response_code), *v),
            Filter::Duration(op, v) => op.holds(rec.duration_ns / 1_000_000, *v),
            Filter::NotHealthCheck => true,
            Filter::Runtime {
                numerator,
                denominator,
                request_id,
            } => {
                let n = match request_id.and_then(|s| rec.header(s)) {
                    Some(id) => stable_hash(id),
                    None => random(),
                };
                n % denominator.max(&1) < *numerator
            }
            Filter::Flags(0) => rec.flags != 0,
            Filter::Flags(mask) => rec.flags & mask != 0,
            Filter::And(all) => all.iter().all(|f| f.passes(rec, random)),
            Filter::Or(any) => any.iter().any(|f| f.passes(rec, random)),
        }
    }
}

/// FNV-1a: the same request id always samples the same way.
fn stable_hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerohop_proto::accesslog::{push_header, ResponseFlags};

    #[test]
    fn filters_decide_as_envoy_defines_them() {
        let mut block = Vec::new();
        push_header(&mut block, 3, b"f0e1d2c3-0000-4000-8000-000000000001");
        let rec = Record {
            response_code: 503,
            duration_ns: 25_000_000,
            flags: ResponseFlags::UPSTREAM_CONNECTION_FAILURE.bits(),
            headers: &block,
            ..Record::default()
        };
        let mut rnd = || 0u64;
        assert!(Filter::Status(Cmp::Ge, 500).passes(&rec, &mut rnd));
        assert!(!Filter::Status(Cmp::Eq, 200).passes(&rec, &mut rnd));
        assert!(Filter::Duration(Cmp::Ge, 25).passes(&rec, &mut rnd));
        assert!(!Filter::Duration(Cmp::Le, 24).passes(&rec, &mut rnd));
        let uf = ResponseFlags::UPSTREAM_CONNECTION_FAILURE.bits();
        assert!(Filter::Flags(0).passes(&rec, &mut rnd));
        assert!(Filter::Flags(uf).passes(&rec, &mut rnd));
        assert!(!Filter::Flags(ResponseFlags::NO_ROUTE_FOUND.bits()).passes(&rec, &mut rnd));
        let all = |numerator| Filter::Runtime {
            numerator,
            denominator: 100,
            request_id: Some(3),
        };
        assert!(all(100).passes(&rec, &mut rnd));
        assert!(!all(0).passes(&rec, &mut rnd));
        let and = Filter::And(vec![Filter::NotHealthCheck, Filter::Status(Cmp::Ne, 503)]);
        assert!(!and.passes(&rec, &mut rnd));
        let or = Filter::Or(vec![and, Filter::Flags(uf)]);
        assert!(or.passes(&rec, &mut rnd));
    }
}
