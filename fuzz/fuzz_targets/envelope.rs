//! Fuzz target: the envelope validator (`EnvelopeValidator::accept`, what the router and the
//! HTTP API run on every body a sender sends), the JSON shape bound before it, and
//! `Envelope::salvage` (what the dead-letter channel reads of a refused body).
//!
//! Invariant beyond "no panic": an accepted envelope, written back with `to_bytes`, is
//! accepted again as the same message.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use lienthong_core::envelope::{Envelope, EnvelopeValidator, json_shape_within};
use lienthong_core::registry::EnvelopeSettings;

static VALIDATOR: LazyLock<EnvelopeValidator> = LazyLock::new(|| {
    EnvelopeValidator::new(&EnvelopeSettings::default()).expect("the shipped schema compiles")
});

fuzz_target!(|data: &[u8]| {
    let _ = json_shape_within(data, 64, 100_000);
    let _ = Envelope::salvage(data);
    if let Ok(env) = VALIDATOR.accept(data) {
        let again = VALIDATOR
            .accept(&env.to_bytes())
            .expect("an accepted envelope, written back, is accepted again");
        assert_eq!(again.message_id, env.message_id);
        assert_eq!(again.ma_ho_so, env.ma_ho_so);
    }
});
