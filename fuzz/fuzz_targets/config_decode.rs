//! Any byte string given as an Envoy bootstrap (YAML or JSON) must load or be refused with
//! an error; never panic. A config that loads must compile into a snapshot that survives
//! the codec round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerohop_proto::codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(boot) = zerohop_control::config::load_bytes(data) {
        let bytes = codec::encode(&boot.snapshot);
        assert_eq!(codec::decode(&bytes).expect("own encoding decodes"), boot.snapshot);
    }
});
