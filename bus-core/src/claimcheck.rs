//! The claim check: attachments above a size threshold leave the envelope for a
//! content-addressed blob store, and the envelope carries their reference and SHA-256 instead,
//! so large dossiers (scanned documents, tens of MB) never travel through the broker as one
//! message. The local directory store is the default; [`BlobStore`] is the seam for an
//! S3-compatible store.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::envelope::{Envelope, hex};

/// URI prefix of a claim-checked attachment: `urn:lienthong:blob:sha256:<64 hex>`.
pub const BLOB_URN: &str = "urn:lienthong:blob:sha256:";

/// A content-addressed store of attachment bytes.
pub trait BlobStore: Send + Sync {
    /// Store `bytes`; returns their SHA-256 (lower-case hex), which addresses them.
    fn put(&self, bytes: &[u8]) -> std::io::Result<String>;
    /// The bytes stored under `sha256`, if any.
    fn get(&self, sha256: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// Delete the bytes stored under `sha256` (absent: nothing to do).
    fn delete(&self, sha256: &str) -> std::io::Result<()>;
    /// The local file holding `sha256`'s bytes, when the store keeps files (it is then
    /// streamed from disk, not read into memory). Default: none.
    fn file(&self, _sha256: &str) -> Option<PathBuf> {
        None
    }
}

/// The SHA-256s of the blobs `env` refers to by the bus's own references
/// (`urn:lienthong:blob:sha256:<hash>`).
pub fn blob_refs(env: &Envelope) -> Vec<String> {
    env.attachments
        .iter()
        .filter_map(|a| a.reference.as_deref()?.strip_prefix(BLOB_URN))
        .map(str::to_string)
        .collect()
}

/// Blobs as files `<dir>/<first two hex>/<sha256>`, written atomically (temp file + rename).
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    dir: PathBuf,
}

impl LocalBlobStore {
    /// A store under `dir` (created on first write).
    pub fn new(dir: &Path) -> Self {
        LocalBlobStore {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, sha256: &str) -> Option<PathBuf> {
        if sha256.len() != 64
            || !sha256
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            return None;
        }
        Some(self.dir.join(&sha256[..2]).join(sha256))
    }
}

impl BlobStore for LocalBlobStore {
    fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let sha = hex(&Sha256::digest(bytes));
        let path = self
            .path(&sha)
            .ok_or_else(|| std::io::Error::other("bad hash"))?;
        if path.exists() {
            return Ok(sha);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", crate::envelope::new_message_id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(sha)
    }

    fn file(&self, sha256: &str) -> Option<PathBuf> {
        self.path(sha256).filter(|p| p.exists())
    }

    fn delete(&self, sha256: &str) -> std::io::Result<()> {
        match self.path(sha256).map(std::fs::remove_file) {
            Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn get(&self, sha256: &str) -> std::io::Result<Option<Vec<u8>>> {
        match self.path(sha256) {
            None => Ok(None),
            Some(p) => match std::fs::read(p) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}

/// Move every inline attachment larger than `threshold_bytes` into `store`, replacing its
/// `content_base64` with the reference `urn:lienthong:blob:sha256:<hash>`. Returns how many
/// were moved. The envelope was validated before, so sizes and hashes are known to be right.
pub fn claim_check(
    env: &mut Envelope,
    store: &dyn BlobStore,
    threshold_bytes: u64,
) -> std::io::Result<usize> {
    let mut moved = 0;
    for a in &mut env.attachments {
        if a.size_bytes <= threshold_bytes {
            continue;
        }
        let Some(b64) = a.content_base64.take() else {
            continue;
        };
        let bytes = match base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()) {
            Ok(b) => b,
            Err(e) => {
                a.content_base64 = Some(b64);
                return Err(std::io::Error::other(format!("attachment {}: {e}", a.name)));
            }
        };
        let sha = store.put(&bytes)?;
        a.reference = Some(format!("{BLOB_URN}{sha}"));
        moved += 1;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Attachment;

    #[test]
    fn large_inline_attachments_move_to_the_store_and_small_ones_stay() {
        let dir =
            std::env::temp_dir().join(format!("lt-blobs-{}", crate::envelope::new_message_id()));
        let store = LocalBlobStore::new(&dir);
        let big = vec![7u8; 5000];
        let small = b"abc".to_vec();
        let att = |name: &str, b: &[u8]| Attachment {
            name: name.into(),
            media_type: "application/pdf".into(),
            size_bytes: b.len() as u64,
            sha256: hex(&Sha256::digest(b)),
            content_base64: Some(base64::engine::general_purpose::STANDARD.encode(b)),
            reference: None,
        };
        let mut env = Envelope::new(
            "dossier.forward",
            "X-261129-0001",
            "1.001193",
            "A",
            Some("B"),
            "c",
        );
        env.attachments = vec![att("big.pdf", &big), att("small.pdf", &small)];
        assert_eq!(claim_check(&mut env, &store, 1000).expect("claim check"), 1);
        let r = env.attachments[0].reference.clone().expect("reference");
        assert_eq!(r, format!("{BLOB_URN}{}", env.attachments[0].sha256));
        assert!(env.attachments[0].content_base64.is_none());
        assert!(env.attachments[1].content_base64.is_some());
        assert_eq!(
            store.get(&env.attachments[0].sha256).expect("get"),
            Some(big)
        );
        assert_eq!(store.get("../../etc/passwd").expect("get"), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
