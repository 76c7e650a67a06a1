//! A package of tens of MB is written and read back in bounded memory: a counting global
//! allocator measures the peak heap in use while a 40 MiB attachment streams from a generator
//! through the edXML writer into a file, and from that file through the reader.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufWriter, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use lienthong_adapters::edxml::read::{Discard, Limits, read};
use lienthong_adapters::edxml::write::{OutAttachment, write};
use lienthong_adapters::edxml::{MessageHeader, Package};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::SeqCst) + n;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is passed straight to the system allocator; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grew(new_size - layout.size());
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `left` pseudo-random bytes (xorshift), generated as they are read.
struct Generator {
    left: u64,
    state: u64,
}

impl Read for Generator {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = self.state as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Peak heap growth (bytes) above what was in use when `f` started.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst).saturating_sub(base))
}

#[test]
fn a_package_of_tens_of_mb_is_written_and_read_in_bounded_memory() {
    const SIZE: u64 = 40 << 20;
    const CAP: usize = 2 << 20;
    let dir = std::env::temp_dir().join(format!("lienthong-edxml-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("big.edxml");
    let pkg = Package {
        message_header: MessageHeader {
            subject: Some("Hồ sơ đất đai kèm bản đồ địa chính".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let ((file, written), write_peak) = peak_during(|| {
        let f = std::fs::File::create(&path).expect("create");
        let (w, written) = write(
            &pkg,
            vec![OutAttachment {
                content_id: "cid:ban-do".into(),
                attachment_name: "ban-do-dia-chinh.zip".into(),
                description: None,
                content_type: "application/zip".into(),
                content: Box::new(Generator {
                    left: SIZE,
                    state: 0x2545_F491_4F6C_DD1D,
                }),
            }],
            BufWriter::with_capacity(64 << 10, f),
        )
        .expect("write");
        (w.into_inner().expect("flush"), written)
    });
    drop(file);
    let on_disk = std::fs::metadata(&path).expect("metadata").len();
    assert!(on_disk > SIZE * 4 / 3, "{on_disk} bytes of package");
    let (back, read_peak) = peak_during(|| {
        read(
            std::fs::File::open(&path).expect("open"),
            &mut Discard,
            Limits::default(),
        )
        .expect("read")
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(written[0].size, SIZE);
    assert_eq!(back.attachments.len(), 1);
    assert_eq!(back.attachments[0].size, SIZE);
    assert_eq!(back.attachments[0].sha256, written[0].sha256);
    eprintln!(
        "{on_disk} bytes of package; peak heap growth: write {write_peak} B, read {read_peak} B"
    );
    assert!(write_peak < CAP, "writing held {write_peak} bytes");
    assert!(read_peak < CAP, "reading held {read_peak} bytes");
}
