use super::*;

fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Endpoint::new(([127, 0, 0, 1], 1000 + i as u16).into(), weight))
        .collect()
}

/// `picks` picks from one table (version 1) and one state.
fn counts(t: &LbTable, n: usize, picks: usize) -> Vec<usize> {
    let rng = Rng::new(7);
    let mut s = LbState::default();
    let mut c = vec![0; n];
    for _ in 0..picks {
        c[s.pick(t, 1, &rng, None).unwrap()] += 1;
    }
    c
}

fn seq(s: &mut LbState, t: &LbTable, version: u64, n: usize) -> Vec<usize> {
    let rng = Rng::new(1);
    (0..n)
        .map(|_| s.pick(t, version, &rng, None).unwrap())
        .collect()
}

#[test]
fn round_robin_rotates_evenly() {
    let t = LbTable::new(LbPolicy::RoundRobin, &endpoints(&[1, 1, 1]));
    assert_eq!(seq(&mut LbState::default(), &t, 1, 6), [0, 1, 2, 0, 1, 2]);
}

#[test]
fn weighted_round_robin_is_proportional_and_interleaved() {
    let t = LbTable::new(LbPolicy::RoundRobin, &endpoints(&[5, 1, 1]));
    assert_eq!(
        seq(&mut LbState::default(), &t, 1, 7),
        [0, 0, 1, 0, 2, 0, 0],
        "smooth WRR order"
    );
    assert_eq!(counts(&t, 3, 7000), vec![5000, 1000, 1000]);
}

#[test]
fn random_follows_weights() {
    let t = LbTable::new(LbPolicy::Random, &endpoints(&[3, 1]));
    let c = counts(&t, 2, 40_000);
    let share = c[0] as f64 / 40_000.0;
    assert!((0.72..0.78).contains(&share), "{c:?}");
}

#[test]
fn empty_cluster_picks_nothing() {
    let rng = Rng::new(1);
    let mut s = LbState::default();
    let rr = LbTable::new(LbPolicy::RoundRobin, &[]);
    assert_eq!(s.pick(&rr, 1, &rng, None), None);
    assert_eq!(
        s.pick(&LbTable::new(LbPolicy::Random, &[]), 1, &rng, None),
        None
    );
}

#[test]
fn round_robin_rotation_survives_a_new_generation() {
    let t = LbTable::new(LbPolicy::RoundRobin, &endpoints(&[1, 1, 1]));
    let mut s = LbState::default();
    assert_eq!(seq(&mut s, &t, 1, 1), [0]);
    // The same endpoints in a new generation (same version), then different ones.
    assert_eq!(seq(&mut s, &t, 1, 1), [1], "continues where it stopped");
    let fewer = LbTable::new(LbPolicy::RoundRobin, &endpoints(&[1]));
    assert_eq!(seq(&mut s, &fewer, 2, 1), [0]);
}

#[test]
fn weighted_round_robin_scores_carry_only_for_the_same_endpoints() {
    let t = LbTable::new(LbPolicy::RoundRobin, &endpoints(&[5, 1, 1]));
    let mut s = LbState::default();
    let first = seq(&mut s, &t, 1, 3);
    let rest = seq(&mut s, &t, 1, 4);
    assert_eq!(
        [first, rest].concat(),
        [0, 0, 1, 0, 2, 0, 0],
        "one smooth sequence across generations"
    );
    let other = LbTable::new(LbPolicy::RoundRobin, &endpoints(&[5, 1, 2]));
    assert_eq!(
        seq(&mut s, &other, 2, 1),
        [0],
        "new endpoints: scores start over"
    );
}

#[test]
fn states_are_kept_per_slot() {
    let t = LbTable::new(LbPolicy::RoundRobin, &endpoints(&[1, 1]));
    let states = LbStates::default();
    let rng = Rng::new(1);
    assert_eq!(states.pick(3, &t, 1, &rng, None), Some(0));
    assert_eq!(states.pick(0, &t, 1, &rng, None), Some(0));
    assert_eq!(states.pick(3, &t, 1, &rng, None), Some(1));
}

#[test]
fn least_request_shares_by_weight_and_avoids_busy_endpoints() {
    let rng = Rng::new(3);
    let policy = LbPolicy::LeastRequest {
        choice_count: 2,
        active_request_bias: 1.0f64.to_bits(),
    };
    let weighted = endpoints(&[1, 1, 2]);
    let t = LbTable::new(policy, &weighted);
    let mut s = LbState::default();
    let mut c = [0usize; 3];
    for _ in 0..4000 {
        c[s.pick(&t, 1, &rng, None).unwrap()] += 1;
    }
    assert_eq!(c, [1000, 1000, 2000], "idle: by weight alone");
    // Three requests in flight to the heavy one: its weight falls to 2 / 4, below each
    // light one's 1.
    let held: Vec<_> = (0..3).filter_map(|_| s.track(2)).collect();
    let mut c = [0usize; 3];
    for _ in 0..3000 {
        c[s.pick(&t, 1, &rng, None).unwrap()] += 1;
    }
    assert!(c[2] < c[0] && c[2] < c[1], "{c:?}");
    drop(held);
    // Equal weights: two choices, never the busy one when the other is free.
    let equal = LbTable::new(policy, &weighted[..2]);
    let mut s = LbState::default();
    s.pick(&equal, 1, &rng, None);
    let _busy = s.track(0);
    let picks: Vec<usize> = (0..50)
        .map(|_| s.pick(&equal, 1, &rng, None).unwrap())
        .collect();
    assert!(picks.iter().filter(|&&p| p == 0).count() < 25, "{picks:?}");
}
