use super::*;

fn endpoints(weights: &[u32]) -> Vec<Endpoint> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Endpoint {
            address: ([127, 0, 0, 1], 1000 + i as u16).into(),
            weight,
        })
        .collect()
}

fn counts(b: &Balancer, n: usize, picks: usize) -> Vec<usize> {
    let rng = Rng::new(7);
    let mut c = vec![0; n];
    for _ in 0..picks {
        c[b.pick(&rng).unwrap()] += 1;
    }
    c
}

#[test]
fn round_robin_rotates_evenly() {
    let b = Balancer::new(LbPolicy::RoundRobin, &endpoints(&[1, 1, 1]));
    let rng = Rng::new(1);
    let seq: Vec<_> = (0..6).map(|_| b.pick(&rng).unwrap()).collect();
    assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
}

#[test]
fn weighted_round_robin_is_proportional_and_interleaved() {
    let b = Balancer::new(LbPolicy::RoundRobin, &endpoints(&[5, 1, 1]));
    let rng = Rng::new(1);
    let seq: Vec<_> = (0..7).map(|_| b.pick(&rng).unwrap()).collect();
    assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0], "smooth WRR order");
    assert_eq!(counts(&b, 3, 7000), vec![5000, 1000, 1000]);
}

#[test]
fn random_follows_weights() {
    let b = Balancer::new(LbPolicy::Random, &endpoints(&[3, 1]));
    let c = counts(&b, 2, 40_000);
    let share = c[0] as f64 / 40_000.0;
    assert!((0.72..0.78).contains(&share), "{c:?}");
}

#[test]
fn empty_cluster_picks_nothing() {
    let rng = Rng::new(1);
    assert_eq!(Balancer::new(LbPolicy::RoundRobin, &[]).pick(&rng), None);
    assert_eq!(Balancer::new(LbPolicy::Random, &[]).pick(&rng), None);
}

#[test]
fn round_robin_rotation_survives_a_new_generation() {
    let eps = endpoints(&[1, 1, 1]);
    let rng = Rng::new(1);
    let old = Balancer::new(LbPolicy::RoundRobin, &eps);
    assert_eq!(old.pick(&rng), Some(0));
    let new = Balancer::carried(LbPolicy::RoundRobin, &eps, Some((&old, &eps)));
    assert_eq!(
        new.pick(&rng),
        Some(1),
        "continues where the old generation stopped"
    );
    let fewer = endpoints(&[1]);
    let shrunk = Balancer::carried(LbPolicy::RoundRobin, &fewer, Some((&new, &eps)));
    assert_eq!(shrunk.pick(&rng), Some(0));
}

#[test]
fn weighted_round_robin_scores_carry_only_for_the_same_endpoints() {
    let eps = endpoints(&[5, 1, 1]);
    let rng = Rng::new(1);
    let old = Balancer::new(LbPolicy::RoundRobin, &eps);
    let first: Vec<_> = (0..3).map(|_| old.pick(&rng).unwrap()).collect();
    let new = Balancer::carried(LbPolicy::RoundRobin, &eps, Some((&old, &eps)));
    let rest: Vec<_> = (0..4).map(|_| new.pick(&rng).unwrap()).collect();
    assert_eq!(
        [first, rest].concat(),
        vec![0, 0, 1, 0, 2, 0, 0],
        "one smooth sequence across generations"
    );
    let other = endpoints(&[5, 1, 2]);
    let fresh = Balancer::carried(LbPolicy::RoundRobin, &other, Some((&new, &eps)));
    assert_eq!(fresh.pick(&rng), Some(0));
}
