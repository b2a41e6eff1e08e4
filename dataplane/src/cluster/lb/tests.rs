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
