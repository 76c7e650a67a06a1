//! How the message store keeps an envelope's body: compressed with zstd (RFC 8878) when that
//! makes it smaller, as routed otherwise (`messages.body_encoding`), and the way back.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

/// How the message store encodes the bodies it keeps (`[store] message_compression`).
///
/// A stored body is written twice on SQLite (the WAL, then the checkpoint) and kept
/// `[store] message_retention_days`: on the sample dossiers (`schemas/samples/dossiers.jsonl`,
/// inline base64 attachments included) zstd level 1 keeps 1 byte for 1.6 (BENCHMARKS.md,
/// 2026-12-06 (night)). Compression trades CPU only: about 20 µs per 5 KiB body at level 1 on
/// a 2-CPU host (260 MiB/s; `cargo bench -p lienthong-core --bench body_codec`). Every body
/// reads back byte for byte, and a body compression would not shrink is kept as routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyCompression {
    /// zstd (RFC 8878), level [`ZSTD_LEVEL`], one frame per body with its content size.
    #[default]
    Zstd,
    /// Bodies kept as routed.
    None,
}

/// The zstd level of [`BodyCompression::Zstd`]: 1, the fastest of the standard levels (level 3,
/// zstd's default, keeps 2 % fewer bytes of the sample dossiers for 1.4 times the time; the
/// first "fast" level, -1, is 1.5 times as fast and keeps 25 % more; zstd's CLI benchmark in
/// 5 KiB blocks).
pub const ZSTD_LEVEL: i32 = 1;

/// `messages.body_encoding` of a zstd-compressed body (NULL: as routed).
pub const ZSTD: &str = "zstd";

thread_local! {
    /// One compression context per thread, reused: a context allocates its tables once.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// `body` as the store keeps it under `how`: the compressed bytes and [`ZSTD`] when
/// compressing makes it smaller, else `None` (keep it as routed).
pub fn encode(body: &[u8], how: BodyCompression) -> Option<(Vec<u8>, &'static str)> {
    if how == BodyCompression::None || body.is_empty() {
        return None;
    }
    let packed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .inspect_err(|e| tracing::warn!(message = "no zstd context; body kept as routed", error = %e))
                .ok();
        }
        c.as_mut()?
            .compress(body)
            .inspect_err(|e| tracing::warn!(message = "zstd failed; body kept as routed", error = %e))
            .ok()
    })?;
    (packed.len() < body.len()).then_some((packed, ZSTD))
}

/// Largest body [`decode`] gives back, bytes: 512 MiB, the largest message RabbitMQ can carry
/// (`max_message_size`), so more than any body the router stored; a damaged or forged frame
/// that claims more is refused before anything is allocated.
pub const MAX_DECODED_BYTES: u64 = 512 << 20;

/// A stored body back as routed, from its bytes and `messages.body_encoding` (`None`: as
/// routed). Errors: an encoding this build does not know, or bytes that do not decompress
/// (a frame without its content size, above [`MAX_DECODED_BYTES`], or damaged; the text says
/// which).
pub fn decode(stored: Vec<u8>, encoding: Option<&str>) -> Result<Vec<u8>, String> {
    match encoding {
        None => Ok(stored),
        Some(ZSTD) => {
            let size = match zstd::zstd_safe::get_frame_content_size(&stored) {
                Ok(Some(n)) => n,
                Ok(None) | Err(_) => {
                    return Err("its zstd body does not decompress: no content size".into());
                }
            };
            if size > MAX_DECODED_BYTES {
                return Err(format!(
                    "its zstd body does not decompress: it claims {size} bytes, above {MAX_DECODED_BYTES}"
                ));
            }
            zstd::bulk::decompress(&stored, size as usize)
                .map_err(|e| format!("its zstd body does not decompress: {e}"))
        }
        Some(other) => Err(format!(
            "its body is encoded as {other:?}, which this build cannot read"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_comes_back_as_routed() {
        let body = "{\"ghi_chu\":\"Hồ sơ liên thông đăng ký khai sinh\"}".repeat(40);
        let (packed, enc) = encode(body.as_bytes(), BodyCompression::Zstd).expect("compressed");
        assert_eq!(enc, ZSTD);
        assert!(packed.len() < body.len() / 4);
        assert_eq!(decode(packed, Some(enc)).expect("decoded"), body.as_bytes());
        assert_eq!(decode(b"{}".to_vec(), None).expect("raw"), b"{}");
    }

    #[test]
    fn what_compression_cannot_shrink_is_kept_as_routed() {
        assert!(encode(b"{}", BodyCompression::Zstd).is_none());
        assert!(encode(b"", BodyCompression::Zstd).is_none());
        let body = "{\"a\":1}".repeat(100);
        assert!(encode(body.as_bytes(), BodyCompression::None).is_none());
    }

    #[test]
    fn a_damaged_or_unknown_body_is_an_error_that_says_so() {
        let (mut packed, _) =
            encode("abcdefgh".repeat(100).as_bytes(), BodyCompression::Zstd).expect("packed");
        packed.truncate(packed.len() / 2);
        let e = decode(packed, Some(ZSTD)).expect_err("truncated");
        assert!(e.contains("does not decompress"), "{e}");
        // A frame whose header was damaged (it no longer says its content size).
        let mut forged = encode(&[b'a'; 4096], BodyCompression::Zstd)
            .expect("packed")
            .0;
        forged[4..].fill(0);
        assert!(decode(forged, Some(ZSTD)).is_err());
        let e = decode(b"x".to_vec(), Some("brotli")).expect_err("unknown");
        assert!(e.contains("\"brotli\""), "{e}");
    }

    #[test]
    fn the_setting_reads_as_lowercase_names() {
        #[derive(Deserialize)]
        struct S {
            c: BodyCompression,
        }
        let s: S = toml::from_str("c = \"none\"").expect("none");
        assert_eq!(s.c, BodyCompression::None);
        let s: S = toml::from_str("c = \"zstd\"").expect("zstd");
        assert_eq!(s.c, BodyCompression::Zstd);
        assert!(toml::from_str::<S>("c = \"gzip\"").is_err());
    }
}
