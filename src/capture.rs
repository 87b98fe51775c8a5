//! Captures a worker's stdout and stderr from pipes, up to a cap each.
//!
//! No task of its own: [`JobOutput::keep_reading`] is polled alongside the
//! job's other events while it runs, reading whatever the pipes hold (past
//! the cap the bytes are dropped), so a chatty job never blocks on a full
//! pipe for long (the pipes are watched from [`UNWATCHED_START`] on).
//! [`JobOutput::snapshot`] gives what was written so far, bytes still in
//! the pipes included (for an answer sent before the job's processes are
//! gone); [`JobOutput::finish`] reads to the end of both streams, i.e. until
//! every writer is gone. Before its job a worker writes nothing, and once
//! the job is answered its output is no longer read: the pipes are closed
//! (a writer left gets EPIPE).

use std::convert::Infallible;
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::net::unix::pipe;

use crate::proto::api::CapturedOutput;

/// How a read reaches the pipe.
#[derive(Clone, Copy)]
enum Via {
    /// Through tokio, which clears the cached readiness on `WouldBlock`
    /// (so the next wait sleeps until the next write).
    Reactor,
    /// Straight to the kernel, whatever tokio last saw (a snapshot must not
    /// miss bytes tokio has not been told about yet).
    Kernel,
}

/// How long a job runs before its pipes are watched. A pipe holds 64 KiB:
/// a job that writes less never waits on it, and most jobs are over by
/// then; watching both pipes (registering them with the reactor, and
/// deregistering them) costs four syscalls a job. A job that writes more
/// within this time waits once, at most this long.
const UNWATCHED_START: Duration = Duration::from_millis(5);

/// Chunks (of `channel::with_read_scratch`'s 64 KiB) one read takes at most.
const MAX_CHUNKS_PER_READ: usize = 16;

/// A pipe's read end, registered with the reactor only once it is waited on.
enum ReadEnd {
    Unwatched(OwnedFd),
    Watched(pipe::Receiver),
    /// It could not be registered: read as ended.
    Lost,
}

/// One captured stream.
struct Capture {
    read_end: ReadEnd,
    output: CapturedOutput,
    cap_bytes: usize,
    /// The end of the stream (or a read error) was seen.
    ended: bool,
}

impl Capture {
    fn new(read: OwnedFd, cap_bytes: usize) -> Self {
        Self { read_end: ReadEnd::Unwatched(read), output: CapturedOutput::default(), cap_bytes, ended: false }
    }

    /// Waits until the pipe has something (or is closed), then reads it.
    /// Cancel-safe: nothing is read before the wait is over.
    async fn read_when_readable(&mut self) {
        self.read_end = match std::mem::replace(&mut self.read_end, ReadEnd::Lost) {
            // Unchecked: see `JobOutput::start` (tokio's checks would cost
            // three syscalls per pipe per worker).
            ReadEnd::Unwatched(fd) => {
                pipe::Receiver::from_owned_fd_unchecked(fd).map_or(ReadEnd::Lost, ReadEnd::Watched)
            }
            watched_or_lost => watched_or_lost,
        };
        let ReadEnd::Watched(receiver) = &self.read_end else {
            self.ended = true;
            return;
        };
        if receiver.readable().await.is_err() {
            self.ended = true;
            return;
        }
        self.read_available(Via::Reactor);
    }

    /// Reads what the pipe holds now, at most [`MAX_CHUNKS_PER_READ`] chunks:
    /// processes writing without pause must not hold the supervisor's one
    /// thread (past that, the rest waits for the next read).
    fn read_available(&mut self, via: Via) {
        if self.ended {
            return;
        }
        let (read_end, output, cap_bytes) = (&self.read_end, &mut self.output, self.cap_bytes);
        self.ended = crate::channel::with_read_scratch(|chunk| {
            for _ in 0..MAX_CHUNKS_PER_READ {
                let read = match (read_end, via) {
                    (ReadEnd::Watched(receiver), Via::Reactor) => receiver.try_read(chunk),
                    (ReadEnd::Watched(receiver), Via::Kernel) => {
                        nix::unistd::read(receiver, chunk).map_err(io::Error::from)
                    }
                    (ReadEnd::Unwatched(fd), _) => nix::unistd::read(fd, chunk).map_err(io::Error::from),
                    (ReadEnd::Lost, _) => return true,
                };
                match read {
                    Ok(0) => return true,
                    Ok(read) => {
                        let room = cap_bytes - output.data.len();
                        if read > room {
                            output.truncated = true;
                        }
                        output.data.extend_from_slice(&chunk[..read.min(room)]);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => return false,
                    Err(_) => return true,
                }
            }
            false
        });
    }
}

/// A worker's stdout and stderr.
pub struct JobOutput {
    stdout: Capture,
    stderr: Capture,
}

impl JobOutput {
    /// Captures both read ends, keeping the first `cap_bytes` of each. They
    /// must be non-blocking read ends of pipes: those a worker hands over
    /// with its `ready`, made and set so before any job's code ran in it.
    pub fn start(stdout: OwnedFd, stderr: OwnedFd, cap_bytes: usize) -> Self {
        Self { stdout: Capture::new(stdout, cap_bytes), stderr: Capture::new(stderr, cap_bytes) }
    }

    /// Reads both pipes as they fill, from [`UNWATCHED_START`] on; never
    /// resolves (once both streams have ended it only waits). Cancel-safe.
    pub async fn keep_reading(&mut self) -> Infallible {
        tokio::time::sleep(UNWATCHED_START).await;
        loop {
            self.read_either().await;
        }
    }

    /// What was written so far to stdout and stderr, including bytes still
    /// in the pipes.
    pub fn snapshot(&mut self) -> (CapturedOutput, CapturedOutput) {
        self.stdout.read_available(Via::Kernel);
        self.stderr.read_available(Via::Kernel);
        (self.stdout.output.clone(), self.stderr.output.clone())
    }

    /// Everything written to stdout and stderr, once every write end is
    /// closed (or `timeout` passed).
    pub async fn finish(mut self, timeout: Duration) -> (CapturedOutput, CapturedOutput) {
        let both_ended = async {
            while !(self.stdout.ended && self.stderr.ended) {
                self.read_either().await;
            }
        };
        let _ = tokio::time::timeout(timeout, both_ended).await;
        self.snapshot()
    }

    /// Waits until a stream that has not ended has something, and reads it;
    /// never resolves once both have ended. Cancel-safe.
    async fn read_either(&mut self) {
        let Self { stdout, stderr } = self;
        tokio::select! {
            () = stdout.read_when_readable(), if !stdout.ended => {}
            () = stderr.read_when_readable(), if !stderr.ended => {}
            else => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LONG: Duration = Duration::from_secs(10);
    /// More than a pipe holds: its writer blocks unless the pipe is read.
    const FLOOD_BYTES: usize = 1 << 20;

    /// A pipe as a worker makes one: only the read end is non-blocking (the
    /// writer's writes must block).
    fn pipe() -> (OwnedFd, std::fs::File) {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
        fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("non-blocking");
        (read, write.into())
    }

    fn output(cap_bytes: usize) -> (JobOutput, std::fs::File, std::fs::File) {
        let ((stdout, stdout_write), (stderr, stderr_write)) = (pipe(), pipe());
        let output = JobOutput::start(stdout, stderr, cap_bytes);
        (output, stdout_write, stderr_write)
    }

    #[tokio::test]
    async fn keeps_the_first_bytes_and_flags_the_rest() {
        let (output, mut stdout, stderr) = output(10);
        drop(stderr);
        let writer = tokio::task::spawn_blocking(move || stdout.write_all(&vec![b'x'; FLOOD_BYTES]));
        let (stdout, stderr) = output.finish(LONG).await;
        writer.await.expect("join").expect("write");
        assert_eq!((stdout.data.as_slice(), stdout.truncated), (&b"xxxxxxxxxx"[..], true));
        assert_eq!((stderr.data.len(), stderr.truncated), (0, false));
    }

    #[tokio::test]
    async fn a_job_flooding_both_streams_never_blocks_while_it_runs() {
        let (mut output, mut stdout, mut stderr) = output(100);
        let job = tokio::task::spawn_blocking(move || {
            stdout.write_all(&vec![b'o'; FLOOD_BYTES])?;
            stderr.write_all(&vec![b'e'; FLOOD_BYTES])
        });
        // The job finishes only if its pipes are read meanwhile.
        let finished = tokio::time::timeout(LONG, async {
            tokio::select! {
                never = output.keep_reading() => match never {},
                wrote = job => wrote.expect("join"),
            }
        });
        finished.await.expect("the writer never blocked for good").expect("write");
        let (stdout, stderr) = output.snapshot();
        assert_eq!((stdout.data, stdout.truncated), (vec![b'o'; 100], true));
        assert_eq!((stderr.data, stderr.truncated), (vec![b'e'; 100], true));
    }

    #[tokio::test]
    async fn a_snapshot_has_everything_written_so_far() {
        let (mut output, mut stdout, stderr) = output(100);
        stdout.write_all(b"one\n").expect("write");
        stdout.write_all(b"two\n").expect("write");
        // The writers are still open: no end of stream, yet nothing is missing.
        let (snapshot, _) = output.snapshot();
        assert_eq!((snapshot.data.as_slice(), snapshot.truncated), (&b"one\ntwo\n"[..], false));
        stdout.write_all(b"three\n").expect("write");
        drop((stdout, stderr));
        assert_eq!(output.finish(LONG).await.0.data, b"one\ntwo\nthree\n");
    }
}
