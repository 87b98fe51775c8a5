//! Captures a worker's stdout or stderr from a pipe, up to a cap.
//!
//! Reading continues past the cap (the bytes are dropped) so a chatty job
//! never blocks on a full pipe; the capture ends when every write end is
//! closed, i.e. when the job's last process is gone.

use std::os::fd::OwnedFd;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::proto::api::CapturedOutput;

/// A pipe whose write end goes to a worker and whose read end is captured.
pub struct CapturePipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
}

impl CapturePipe {
    pub fn new() -> std::io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // Only our end is non-blocking: pipe2 gives each end its own open
        // file description, and the worker's writes must block.
        fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        Ok(Self { read, write })
    }
}

/// Reads `read` to EOF, keeping the first `cap_bytes`.
pub async fn capture(read: OwnedFd, cap_bytes: usize) -> CapturedOutput {
    let mut output = CapturedOutput::default();
    let Ok(mut receiver) = pipe::Receiver::from_owned_fd(read) else { return output };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match receiver.read(&mut chunk).await {
            Ok(0) | Err(_) => return output,
            Ok(read) => {
                let room = cap_bytes - output.data.len();
                if read > room {
                    output.truncated = true;
                }
                output.data.extend_from_slice(&chunk[..read.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn keeps_the_first_bytes_and_flags_the_rest() {
        let pipe = CapturePipe::new().expect("pipe");
        let reader = tokio::spawn(capture(pipe.read, 10));
        let mut write = std::fs::File::from(pipe.write);
        // More than a pipe buffer: the writer must never block on us.
        tokio::task::spawn_blocking(move || write.write_all(&vec![b'x'; 1 << 20])).await.expect("join").expect("write");
        let output = reader.await.expect("join");
        assert_eq!(output.data, b"xxxxxxxxxx");
        assert!(output.truncated);
    }

    #[tokio::test]
    async fn small_output_is_whole() {
        let pipe = CapturePipe::new().expect("pipe");
        let reader = tokio::spawn(capture(pipe.read, 10));
        std::fs::File::from(pipe.write).write_all(b"hi\n").expect("write");
        let output = reader.await.expect("join");
        assert_eq!((output.data.as_slice(), output.truncated), (&b"hi\n"[..], false));
    }
}
