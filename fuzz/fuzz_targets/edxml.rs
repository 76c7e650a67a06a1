//! Fuzz target: the edXML reader (QCVN 102:2016 packages from a department's system, read
//! whole and streamed) and the push answer built on it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lienthong_adapters::edxml::read::read_bytes;
use lienthong_adapters::edxml_adapter::push_answer;

fuzz_target!(|data: &[u8]| {
    let _ = read_bytes(data);
    let _ = push_answer(
        "submit",
        reqwest::StatusCode::OK,
        data,
        "000.20.59.H48-261129-7500",
    );
});
