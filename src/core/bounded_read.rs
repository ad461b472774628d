//! Reading the files galera-lb is told to read (its configuration, a secret) so that no file can
//! stall or swamp it.
//!
//! [`read_regular`] takes regular files only, opened without blocking (a FIFO is refused instead
//! of waiting for a writer; `/dev/zero` is refused instead of read forever), up to a size limit.
//! [`FileReader`] runs a read on a thread of its own and gives up waiting after
//! [`READ_TIMEOUT`]: a file on a hung network mount blocks that thread, never the runtime's
//! workers (which carry every session), and never more than one such thread at a time.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The largest configuration file galera-lb reads (a configuration with 10,000 backends is
/// about 400 KiB).
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The largest secret file (password, token) galera-lb reads.
pub(crate) const MAX_SECRET_BYTES: u64 = 64 << 10;

/// How long start-up, `check` and a reload wait for a read before giving up.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads `path` whole if it is a regular file of at most `max_bytes`. The error says which rule
/// the file broke (in words an operator can act on), without the path: the caller names it.
pub(crate) fn read_regular(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        let kind = if metadata.is_dir() {
            "a directory"
        } else {
            use std::os::unix::fs::FileTypeExt;
            let kind = metadata.file_type();
            if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_char_device() || kind.is_block_device() {
                "a device"
            } else {
                "a socket"
            }
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file; give the path of a regular file"),
        ));
    }
    let mut bytes = Vec::with_capacity(metadata.len().min(max_bytes) as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it is larger than {} KiB, the most galera-lb reads",
                max_bytes >> 10
            ),
        ));
    }
    Ok(bytes)
}

/// Runs reads on threads of their own, one at a time: a read that hangs (a dead NFS server)
/// keeps its thread, and no second thread is started behind it.
#[derive(Debug, Default)]
pub(crate) struct FileReader {
    reading: Arc<AtomicBool>,
}

/// Clears the reader's flag when its thread ends, however it ends.
struct ReadingFlag(Arc<AtomicBool>);

impl Drop for ReadingFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A read started by [`FileReader::start`].
pub(crate) struct PendingRead<T> {
    outcome: tokio::sync::oneshot::Receiver<Result<T, String>>,
    what: String,
    started: Instant,
    timeout: Duration,
}

impl FileReader {
    /// Starts `read` on a thread of its own; `what` names the file in the message when the read
    /// does not end within `timeout`. Refused at once while this reader's earlier read has not
    /// returned.
    pub(crate) fn start<T: Send + 'static>(
        &self,
        what: &str,
        timeout: Duration,
        read: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<PendingRead<T>, String> {
        if self.reading.swap(true, Ordering::AcqRel) {
            return Err(format!(
                "{what}: an earlier read has not returned yet (a hung file system?); not \
                 reading again until it does"
            ));
        }
        let flag = ReadingFlag(self.reading.clone());
        let (sender, outcome) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("galera-lb-read".to_string())
            .spawn(move || {
                let _flag = flag;
                let _ = sender.send(read());
            })
            .map_err(|e| format!("{what}: cannot start a thread to read it: {e}"))?;
        Ok(PendingRead {
            outcome,
            what: what.to_string(),
            started: Instant::now(),
            timeout,
        })
    }
}

impl<T> PendingRead<T> {
    fn timed_out(&self) -> String {
        format!(
            "{}: reading it took longer than {} s (a FIFO, a device or a hung network file \
             system?); galera-lb reads only regular files that answer",
            self.what,
            self.timeout.as_secs_f64()
        )
    }

    /// Waits for the outcome without blocking the runtime.
    pub(crate) async fn wait(self) -> Result<T, String> {
        let remaining = self.timeout.saturating_sub(self.started.elapsed());
        let late = self.timed_out();
        match tokio::time::timeout(remaining, self.outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(format!("{}: the reader thread ended early", self.what)),
            Err(_) => Err(late),
        }
    }

    /// Waits for the outcome on this thread (before the runtime exists).
    pub(crate) fn wait_blocking(mut self) -> Result<T, String> {
        let deadline = self.started + self.timeout;
        loop {
            match self.outcome.try_recv() {
                Ok(outcome) => return outcome,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Err(format!("{}: the reader thread ended early", self.what));
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_up_to_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, b"backends: []\n").unwrap();
        assert_eq!(read_regular(&file, 100).unwrap(), b"backends: []\n");
        let e = read_regular(&file, 5).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");

        let fifo = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        let e = read_regular(&fifo, 100).unwrap_err().to_string();
        assert!(e.contains("a FIFO, not a regular file"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "opening a FIFO blocked"
        );

        let e = read_regular(Path::new("/dev/zero"), 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a device, not a regular file"), "{e}");
        let e = read_regular(dir.path(), 100).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
    }

    #[test]
    fn a_read_that_hangs_is_given_up_and_not_started_twice() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let reader = FileReader::default();
        let pending = reader
            .start("slow.yaml", Duration::from_millis(100), move || {
                let _ = released.recv();
                Ok(())
            })
            .unwrap();
        let e = pending.wait_blocking().unwrap_err();
        assert!(
            e.contains("slow.yaml: reading it took longer than 0.1 s"),
            "{e}"
        );
        let e = reader
            .start("again.yaml", Duration::from_secs(1), || Ok(()))
            .err()
            .unwrap();
        assert!(e.contains("has not returned yet"), "{e}");
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let pending = loop {
            match reader.start("again.yaml", Duration::from_secs(1), || Ok(7)) {
                Ok(pending) => break pending,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(pending.wait_blocking().unwrap(), 7);
    }
}
