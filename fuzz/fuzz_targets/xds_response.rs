//! Any sequence of ADS responses (clusters, endpoints, listeners, routes, secrets), state of
//! the world or delta, must be applied or refused
//! resource by resource (a NACK), never panic; whatever the client then holds must compile
//! into a snapshot that survives the codec round trip.
//!
//! Input: one byte (even: state of the world, odd: delta), then responses, each a
//! little-endian u16 length and that many bytes of an encoded (Delta)DiscoveryResponse.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use zerohop_control::config::{load, Dynamic, Format};
use zerohop_control::xds::wire::{DeltaDiscoveryResponse, DiscoveryResponse};
use zerohop_control::xds::{Client, StreamId};
use zerohop_proto::codec;

const BOOTSTRAP: &str = include_str!("../../control/tests/fixtures/ads.yaml");

fn dynamic(delta: bool) -> Dynamic {
    static SOTW: OnceLock<Dynamic> = OnceLock::new();
    static DELTA: OnceLock<Dynamic> = OnceLock::new();
    let make = |api: &str| {
        let yaml = BOOTSTRAP.replace("DELTA_GRPC", api);
        load(&yaml, Format::Yaml).unwrap().dynamic.unwrap()
    };
    match delta {
        true => DELTA.get_or_init(|| make("DELTA_GRPC")).clone(),
        false => SOTW.get_or_init(|| make("GRPC")).clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let delta = mode % 2 == 1;
    let mut client = Client::new(dynamic(delta));
    client.connected(&StreamId::Ads);
    while rest.len() >= 2 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let body = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        let handled = match delta {
            false => match DiscoveryResponse::decode(body) {
                Ok(r) => client.sotw(&StreamId::Ads, r),
                Err(_) => continue,
            },
            true => match DeltaDiscoveryResponse::decode(body) {
                Ok(r) => client.delta(&StreamId::Ads, r),
                Err(_) => continue,
            },
        };
        if let Ok(pending) = handled {
            client.settle(pending);
        }
    }
    let snapshot = client.snapshot();
    let bytes = codec::encode(&snapshot);
    assert_eq!(codec::decode(&bytes).expect("own encoding decodes"), snapshot);
});
