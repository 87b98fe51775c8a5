//! Captures a worker's stdout or stderr from a pipe, up to a cap.
//!
//! A task reads continuously (past the cap the bytes are dropped), so a
//! chatty job never blocks on a full pipe. [`Capture::snapshot`] gives what
//! was written so far, bytes still in the pipe included (for an answer sent
//! before the job's processes are gone); [`Capture::finish`] waits for the
//! end of the stream, i.e. for every writer to be gone.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use crate::proto::api::CapturedOutput;

/// A pipe whose write end goes to a worker and whose read end is captured.
pub struct CapturePipe {
    pub read: ReadEnd,
    pub write: OwnedFd,
}

/// The read end of a [`CapturePipe`]: a pipe's, and non-blocking.
pub struct ReadEnd(OwnedFd);

impl CapturePipe {
    pub fn new() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // Only our end is non-blocking: pipe2 gives each end its own open
        // file description, and the worker's writes must block.
        fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        Ok(Self { read: ReadEnd(read), write })
    }
}

struct Shared {
    receiver: pipe::Receiver,
    /// Held while reading *and* appending, so bytes keep their order.
    output: Mutex<CapturedOutput>,
    cap_bytes: usize,
}

/// How a read reaches the pipe.
#[derive(Clone, Copy)]
enum Via {
    /// Through tokio, which clears the cached readiness on `WouldBlock`
    /// (the reading task's way, so it sleeps until the next write).
    Reactor,
    /// Straight to the kernel, whatever tokio last saw (a snapshot must not
    /// miss bytes tokio has not been told about yet).
    Kernel,
}

impl Shared {
    /// Reads what the pipe holds now; `Ok(true)` at the end of the stream.
    fn read_available(&self, via: Via) -> io::Result<bool> {
        let mut output = self.output.lock().expect("capture lock");
        crate::channel::with_read_scratch(|chunk| {
            loop {
                let read = match via {
                    Via::Reactor => self.receiver.try_read(chunk),
                    Via::Kernel => nix::unistd::read(&self.receiver, chunk).map_err(io::Error::from),
                };
                match read {
                    Ok(0) => return Ok(true),
                    Ok(read) => {
                        let room = self.cap_bytes - output.data.len();
                        if read > room {
                            output.truncated = true;
                        }
                        output.data.extend_from_slice(&chunk[..read.min(room)]);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(error) => return Err(error),
                }
            }
        })
    }
}

pub struct Capture {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Capture {
    /// Starts capturing `read`, keeping the first `cap_bytes`.
    pub fn start(read: ReadEnd, cap_bytes: usize) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            // Unchecked: `ReadEnd` is a pipe's non-blocking read end already,
            // and tokio's checks would cost three syscalls per pipe per worker.
            receiver: pipe::Receiver::from_owned_fd_unchecked(read.0)?,
            output: Mutex::new(CapturedOutput::default()),
            cap_bytes,
        });
        let reader = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                if reader.receiver.readable().await.is_err() {
                    return;
                }
                match reader.read_available(Via::Reactor) {
                    Ok(false) => {}
                    Ok(true) | Err(_) => return,
                }
            }
        });
        Ok(Self { shared, task })
    }

    /// What was written so far, including bytes still in the pipe.
    pub fn snapshot(&self) -> CapturedOutput {
        let _ = self.shared.read_available(Via::Kernel);
        self.shared.output.lock().expect("capture lock").clone()
    }

    /// Stops capturing: the read end is closed (a writer left gets EPIPE).
    pub fn stop(self) {
        self.task.abort();
    }

    /// Everything, once every write end is closed (or `timeout` passed).
    pub async fn finish(mut self, timeout: Duration) -> CapturedOutput {
        if tokio::time::timeout(timeout, &mut self.task).await.is_err() {
            self.task.abort();
        }
        self.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn keeps_the_first_bytes_and_flags_the_rest() {
        let pipe = CapturePipe::new().expect("pipe");
        let capture = Capture::start(pipe.read, 10).expect("capture");
        let mut write = std::fs::File::from(pipe.write);
        // More than a pipe buffer: the writer must never block on us.
        tokio::task::spawn_blocking(move || write.write_all(&vec![b'x'; 1 << 20])).await.expect("join").expect("write");
        let output = capture.finish(LONG).await;
        assert_eq!(output.data, b"xxxxxxxxxx");
        assert!(output.truncated);
    }

    #[tokio::test]
    async fn a_snapshot_has_everything_written_so_far() {
        let pipe = CapturePipe::new().expect("pipe");
        let capture = Capture::start(pipe.read, 100).expect("capture");
        let mut write = std::fs::File::from(pipe.write);
        write.write_all(b"one\n").expect("write");
        write.write_all(b"two\n").expect("write");
        // The writer is still open: no end of stream, yet nothing is missing.
        let snapshot = capture.snapshot();
        assert_eq!((snapshot.data.as_slice(), snapshot.truncated), (&b"one\ntwo\n"[..], false));
        write.write_all(b"three\n").expect("write");
        drop(write);
        assert_eq!(capture.finish(LONG).await.data, b"one\ntwo\nthree\n");
    }
}
